package discordsim

import (
	"strconv"
)

// Gateway opcodes, as listed in Discord's "Opcodes and Status Codes" page.
const (
	OpDispatch                = 0
	OpHeartbeat               = 1
	OpIdentify                = 2
	OpPresenceUpdate          = 3
	OpVoiceStateUpdate        = 4
	OpResume                  = 6
	OpReconnect               = 7
	OpRequestGuildMembers     = 8
	OpInvalidSession          = 9
	OpHello                   = 10
	OpHeartbeatACK            = 11
	OpRequestSoundboardSounds = 31
)

// Gateway close event codes.
const (
	CloseUnknownError         = 4000
	CloseUnknownOpcode        = 4001
	CloseDecodeError          = 4002
	CloseNotAuthenticated     = 4003
	CloseAuthenticationFailed = 4004
	CloseAlreadyAuthenticated = 4005
	CloseInvalidSeq           = 4007
	CloseRateLimited          = 4008
	CloseSessionTimedOut      = 4009
	CloseInvalidShard         = 4010
	CloseShardingRequired     = 4011
	CloseInvalidAPIVersion    = 4012
	CloseInvalidIntents       = 4013
	CloseDisallowedIntents    = 4014
)

// closeReasons are the reason strings Discord puts into its close frames.
var closeReasons = map[int]string{
	CloseUnknownError:         "Unknown error.",
	CloseUnknownOpcode:        "Unknown opcode.",
	CloseDecodeError:          "Error while decoding payload.",
	CloseNotAuthenticated:     "Not authenticated.",
	CloseAuthenticationFailed: "Authentication failed.",
	CloseAlreadyAuthenticated: "Already authenticated.",
	CloseInvalidSeq:           "Invalid seq.",
	CloseRateLimited:          "Rate limited.",
	CloseSessionTimedOut:      "Session timed out.",
	CloseInvalidShard:         "Invalid shard.",
	CloseShardingRequired:     "Sharding required.",
	CloseInvalidAPIVersion:    "Invalid API version.",
	CloseInvalidIntents:       "Invalid intent(s).",
	CloseDisallowedIntents:    "Disallowed intent(s).",
}

// CloseReason returns the reason text Discord sends with a gateway close
// code, or "" for codes it does not define.
func CloseReason(code int) string { return closeReasons[code] }

// closeEndsSession reports whether, after the server closes with code, the
// session can no longer be resumed. Discord documents 4007 and 4009 as
// "start a new session" and the others listed as "do not reconnect".
func closeEndsSession(code int) bool {
	switch code {
	case CloseAuthenticationFailed, CloseInvalidSeq, CloseSessionTimedOut,
		CloseInvalidShard, CloseShardingRequired, CloseInvalidAPIVersion,
		CloseInvalidIntents, CloseDisallowedIntents:
		return true
	}
	return false
}

// Intents referenced by the simulator.
const (
	IntentGuilds                   = 1 << 0
	IntentGuildMembers             = 1 << 1
	IntentGuildPresences           = 1 << 8
	IntentGuildMessages            = 1 << 9
	IntentGuildMessageTyping       = 1 << 11
	IntentMessageContent           = 1 << 15
	intentLimit              int64 = 1 << 26 // first bit above DIRECT_MESSAGE_POLLS
)

// maxClientPayload is Discord's limit for a payload sent by a client;
// larger payloads are closed with 4002.
const maxClientPayload = 4096

// gatewayTrace imitates the _trace field Discord includes in HELLO, READY and
// RESUMED so clients that log it see something plausible.
const gatewayTrace = `["[\"gateway-prd-us-east1-sim-0\",{\"micros\":0.0}]"]`

// controlFrame builds a non-dispatch payload; d must be valid JSON.
func controlFrame(op int, d string) []byte {
	return []byte(`{"t":null,"s":null,"op":` + strconv.Itoa(op) + `,"d":` + d + `}`)
}

// dispatchFrame builds the wire payload of a dispatch and returns the offset
// of d inside it so the ledger can hand out d without a copy. Field order
// follows what Discord sends (t, s, op, d).
func dispatchFrame(t string, seq int64, d []byte) (frame []byte, dOff int) {
	b := make([]byte, 0, len(d)+len(t)+40)
	b = append(b, `{"t":"`...)
	b = append(b, t...)
	b = append(b, `","s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"op":0,"d":`...)
	dOff = len(b)
	b = append(b, d...)
	b = append(b, '}')
	return b, dOff
}

// validEventName accepts Discord-style event names (READY, GUILD_CREATE, ...).
// Restricting the alphabet lets dispatchFrame embed t without JSON escaping.
func validEventName(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
