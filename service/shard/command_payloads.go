package shard

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The gateway commands a worker may ask a shard to send. Every other opcode
// is the shard's own (heartbeat, IDENTIFY, RESUME) or not a command.
const (
	OpPresenceUpdate      = 3
	OpVoiceStateUpdate    = 4
	OpRequestGuildMembers = 8
)

// maxCommandBytes is Discord's limit on a payload a client sends; a larger
// one closes the connection with 4002.
const maxCommandBytes = 4096

// maxNonceBytes is Discord's limit on an op 8 nonce: a longer one is
// ignored, and the chunks would come back without it.
const maxNonceBytes = 32

// nonceStart marks the nonces the gateway makes, so that a chunk carrying
// one whose asker is gone is recognised as a reply, dropped and counted.
const nonceStart = "gw-"

// Command is one gateway command as Discord takes it: {"op":3|4|8,"d":{…}}.
type Command struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
}

// encodeCommand checks cmd against Discord's documented payload and
// returns the payload to write, normalised (fields Discord requires are
// filled with their neutral value), and for op 8 the nonce it carries.
func encodeCommand(cmd Command) (payload []byte, nonce string, err error) {
	var d any
	switch cmd.Op {
	case OpPresenceUpdate:
		d, err = presenceData(cmd.D)
	case OpVoiceStateUpdate:
		d, err = voiceStateData(cmd.D)
	case OpRequestGuildMembers:
		var m *membersRequest
		if m, err = membersData(cmd.D); err == nil {
			d, nonce = m, m.Nonce
		}
	default:
		return nil, "", fmt.Errorf("op %d is not a command a worker may send (3, 4 or 8)", cmd.Op)
	}
	if err != nil {
		return nil, "", err
	}
	payload, err = json.Marshal(struct {
		Op int `json:"op"`
		D  any `json:"d"`
	}{cmd.Op, d})
	if err != nil {
		return nil, "", err
	}
	if len(payload) > maxCommandBytes {
		return nil, "", fmt.Errorf("the command is %d bytes; Discord takes at most %d", len(payload), maxCommandBytes)
	}
	return payload, nonce, nil
}

// presence is an op 3 d, in Discord's field order.
type presence struct {
	Since      json.RawMessage `json:"since"` // unix ms, or null
	Activities json.RawMessage `json:"activities"`
	Status     string          `json:"status"`
	AFK        bool            `json:"afk"`
}

var presenceStatuses = map[string]bool{"online": true, "dnd": true, "idle": true, "invisible": true, "offline": true}

// NormalizePresence checks an op 3 d ({"status","activities","afk","since"})
// and returns it with the optional fields filled: activities [], afk
// false, since null.
func NormalizePresence(d json.RawMessage) (json.RawMessage, error) {
	p, err := presenceData(d)
	if err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

func presenceData(raw json.RawMessage) (*presence, error) {
	var p presence
	if err := strictObject(raw, &p); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if !presenceStatuses[p.Status] {
		return nil, fmt.Errorf("presence: status %q must be online, dnd, idle, invisible or offline", p.Status)
	}
	switch {
	case isNull(p.Activities):
		p.Activities = json.RawMessage(`[]`)
	case p.Activities[0] != '[':
		return nil, errors.New("presence: activities must be an array")
	}
	switch {
	case isNull(p.Since):
		p.Since = json.RawMessage(`null`)
	default:
		var ms int64
		if json.Unmarshal(p.Since, &ms) != nil || ms < 0 {
			return nil, errors.New("presence: since must be unix milliseconds or null")
		}
	}
	return &p, nil
}

// voiceState is an op 4 d.
type voiceState struct {
	GuildID   string  `json:"guild_id"`
	ChannelID *string `json:"channel_id"` // null leaves the voice channel
	SelfMute  bool    `json:"self_mute"`
	SelfDeaf  bool    `json:"self_deaf"`
}

func voiceStateData(raw json.RawMessage) (*voiceState, error) {
	var v voiceState
	if err := strictObject(raw, &v); err != nil {
		return nil, fmt.Errorf("voice state: %w", err)
	}
	if !isSnowflake(v.GuildID) {
		return nil, fmt.Errorf("voice state: guild_id %q is not a snowflake", v.GuildID)
	}
	if v.ChannelID != nil && !isSnowflake(*v.ChannelID) {
		return nil, fmt.Errorf("voice state: channel_id %q is not a snowflake (null leaves the channel)", *v.ChannelID)
	}
	return &v, nil
}

// membersRequest is an op 8 d.
type membersRequest struct {
	GuildID   string          `json:"guild_id"`
	Query     *string         `json:"query,omitempty"`
	Limit     *int            `json:"limit,omitempty"`
	Presences bool            `json:"presences,omitempty"`
	UserIDs   json.RawMessage `json:"user_ids,omitempty"`
	Nonce     string          `json:"nonce"`
}

// membersData checks an op 8 d and gives it a nonce when it has none: the
// gateway routes the chunks back to the asker by it.
func membersData(raw json.RawMessage) (*membersRequest, error) {
	var m membersRequest
	if err := strictObject(raw, &m); err != nil {
		return nil, fmt.Errorf("request guild members: %w", err)
	}
	if !isSnowflake(m.GuildID) {
		return nil, fmt.Errorf("request guild members: guild_id %q is not a snowflake (one guild per request)", m.GuildID)
	}
	if (m.Query == nil) == isNull(m.UserIDs) {
		return nil, errors.New("request guild members: give either query (with limit; \"\" and 0 for all members) or user_ids")
	}
	if m.Query != nil && m.Limit == nil {
		zero := 0
		m.Limit = &zero
	}
	if m.Limit != nil && *m.Limit < 0 {
		return nil, fmt.Errorf("request guild members: limit %d is negative", *m.Limit)
	}
	if !isNull(m.UserIDs) {
		if err := checkUserIDs(m.UserIDs); err != nil {
			return nil, err
		}
	}
	switch {
	case len(m.Nonce) > maxNonceBytes:
		return nil, fmt.Errorf("request guild members: nonce is %d bytes; Discord takes at most %d", len(m.Nonce), maxNonceBytes)
	case m.Nonce == "":
		m.Nonce = newNonce()
	}
	return &m, nil
}

// checkUserIDs accepts one snowflake or up to 100 of them, as Discord does.
func checkUserIDs(raw json.RawMessage) error {
	var ids []string
	var one string
	if json.Unmarshal(raw, &one) == nil {
		ids = []string{one}
	} else if err := json.Unmarshal(raw, &ids); err != nil {
		return errors.New("request guild members: user_ids must be a snowflake or an array of them")
	}
	if len(ids) == 0 || len(ids) > 100 {
		return fmt.Errorf("request guild members: %d user_ids; Discord takes 1 to 100", len(ids))
	}
	for _, id := range ids {
		if !isSnowflake(id) {
			return fmt.Errorf("request guild members: user id %q is not a snowflake", id)
		}
	}
	return nil
}

// newNonce returns a fresh gateway nonce: 27 bytes, within Discord's 32.
func newNonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return nonceStart + hex.EncodeToString(b[:])
}

// strictObject decodes a JSON object into v, refusing fields v does not
// have: a misspelt field would otherwise be dropped without a word.
func strictObject(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("d must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// isSnowflake accepts Discord ids: decimal digits, at most 20.
func isSnowflake(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
