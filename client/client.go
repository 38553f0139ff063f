// Package client is a worker's side of the gateway, over NATS: consume the
// events the gateway publishes (durable JetStream consumers, typed
// envelopes with data left raw), send a gateway command to the shard of a
// guild (it reads the fleet's plan and computes the shard), request a
// guild's members and iterate the chunks, and set the bot's presence.
//
// The package speaks the gateway's NATS contract and imports nothing of the
// gateway itself:
//
//	gateway.plan                    request → {"total_shards","shards_per_pool","pools"}
//	gateway.shards.<shard_id>.send  request {"op":3|4|8,"d":{…}} → {"ok":true} or {"ok":false,"error","retry_after_ms"}
//	gateway.presence                message {"status","activities","afk","since"} → every shard of every instance
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Subjects and headers of the gateway's NATS contract.
const (
	PlanSubject     = "gateway.plan"
	PresenceSubject = "gateway.presence"
	// TimeoutHeader tells the gateway how long a command may wait for the
	// shard's send budget, in milliseconds.
	TimeoutHeader = "Gateway-Timeout-Ms"
	// ReplyHeader marks each GUILD_MEMBERS_CHUNK on an op 8's reply subject
	// ("chunk"); ChunkLastHeader ("true") the last one.
	ReplyHeader     = "Gateway-Reply"
	ChunkLastHeader = "Gateway-Chunk-Last"
)

// Gateway command opcodes a worker may send.
const (
	OpPresenceUpdate      = 3
	OpVoiceStateUpdate    = 4
	OpRequestGuildMembers = 8
)

// SendSubject is the request subject of shard shardID's commands.
func SendSubject(shardID int) string { return "gateway.shards." + strconv.Itoa(shardID) + ".send" }

// DefaultTimeout bounds a request whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// ErrNoInstance: no gateway instance runs the shard (or answers the plan or
// presence subject) at the moment, e.g. while a pool is handed over.
var ErrNoInstance = errors.New("no gateway instance answers (is the shard's pool running?)")

// Error is a command the gateway refused or Discord rate limited.
type Error struct {
	Msg string
	// Result: not_ready, no_budget, invalid, not_here, failed, or
	// rate_limited (Discord's RATE_LIMITED answer to an op 8).
	Result string
	// RetryAfter is when trying again may work (0: it will not help).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%s (retry after %v)", e.Msg, e.RetryAfter)
	}
	return e.Msg
}

// Command is a gateway command: {"op":3|4|8,"d":{…}}.
type Command struct {
	Op int `json:"op"`
	D  any `json:"d"`
}

// Plan is the fleet's shard plan.
type Plan struct {
	TotalShards   int `json:"total_shards"`
	ShardsPerPool int `json:"shards_per_pool"`
	Pools         int `json:"pools"`
	// Generations: the plan in force and, while the fleet reshards, the
	// next one with its progress (reshard.go).
	Generations []Generation `json:"generations,omitempty"`
}

// ShardFor returns the shard of guildID: (guild_id >> 22) % total_shards.
func (p Plan) ShardFor(guildID string) (int, error) {
	id, err := strconv.ParseUint(guildID, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("guild id %q is not a snowflake", guildID)
	}
	if p.TotalShards < 1 {
		return 0, errors.New("the plan has no shards")
	}
	return int((id >> 22) % uint64(p.TotalShards)), nil
}

// Client talks to the gateway over a NATS connection it does not own.
type Client struct {
	nc *nats.Conn

	mu   sync.Mutex
	plan *Plan // cached: the shard count changes only with a resharding (call Plan again)
}

// New returns a client over nc.
func New(nc *nats.Conn) *Client { return &Client{nc: nc} }

// Plan asks any gateway instance for the fleet's plan.
func (c *Client) Plan(ctx context.Context) (Plan, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, PlanSubject, nil)
	if err != nil {
		return Plan{}, requestError(err)
	}
	var p Plan
	if err := json.Unmarshal(msg.Data, &p); err != nil {
		return Plan{}, fmt.Errorf("plan %q: %w", msg.Data, err)
	}
	c.mu.Lock()
	c.plan = &p
	c.mu.Unlock()
	return p, nil
}

// ShardFor returns the shard of guildID, reading the plan once.
func (c *Client) ShardFor(ctx context.Context, guildID string) (int, error) {
	c.mu.Lock()
	p := c.plan
	c.mu.Unlock()
	if p == nil {
		fresh, err := c.Plan(ctx)
		if err != nil {
			return 0, err
		}
		p = &fresh
	}
	return p.ShardFor(guildID)
}

// Send sends cmd on the shard of guildID and returns once the gateway
// wrote it to Discord.
func (c *Client) Send(ctx context.Context, guildID string, cmd Command) error {
	shardID, err := c.ShardFor(ctx, guildID)
	if err != nil {
		return err
	}
	return c.SendToShard(ctx, shardID, cmd)
}

// SendToShard sends cmd on shard shardID. An op 8 sent this way gets its
// acknowledgement only; Members iterates its chunks.
func (c *Client) SendToShard(ctx context.Context, shardID int, cmd Command) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	msg, err := newRequest(ctx, SendSubject(shardID), cmd)
	if err != nil {
		return err
	}
	resp, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return requestError(err)
	}
	return replyError(resp.Data)
}

// UpdateVoiceState joins (channelID set) or leaves (channelID "") a voice
// channel of guildID: op 4 on the guild's shard. The VOICE_STATE_UPDATE and
// VOICE_SERVER_UPDATE it brings are published to events.dispatch.* when the
// gateway's EXTRA_EVENTS lists them.
func (c *Client) UpdateVoiceState(ctx context.Context, guildID, channelID string, selfMute, selfDeaf bool) error {
	var channel any
	if channelID != "" {
		channel = channelID
	}
	return c.Send(ctx, guildID, Command{Op: OpVoiceStateUpdate, D: map[string]any{
		"guild_id": guildID, "channel_id": channel, "self_mute": selfMute, "self_deaf": selfDeaf,
	}})
}

// Presence is the bot's presence (op 3's d).
type Presence struct {
	Status     string     `json:"status"` // online, dnd, idle, invisible, offline
	Activities []Activity `json:"activities"`
	AFK        bool       `json:"afk"`
	Since      *int64     `json:"since"` // unix ms since idle, or nil
}

// Activity is one of the presence's activities.
type Activity struct {
	Name  string `json:"name"`
	Type  int    `json:"type"` // 0 playing, 1 streaming, 2 listening, 3 watching, 4 custom, 5 competing
	State string `json:"state,omitempty"`
	URL   string `json:"url,omitempty"`
}

// PresenceReply is the answer of the first instance that took a presence.
type PresenceReply struct {
	OK     bool     `json:"ok"`
	Shards int      `json:"shards"` // shards of that instance it was sent on
	Errors []string `json:"errors,omitempty"`
}

// SetPresence sets the bot's presence on every shard of every instance and
// for every later IDENTIFY. The reply is the first instance's.
func (c *Client) SetPresence(ctx context.Context, p Presence) (PresenceReply, error) {
	if p.Activities == nil {
		p.Activities = []Activity{}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return PresenceReply{}, err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, PresenceSubject, b)
	if err != nil {
		return PresenceReply{}, requestError(err)
	}
	var r PresenceReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return PresenceReply{}, fmt.Errorf("presence reply %q: %w", msg.Data, err)
	}
	if !r.OK && r.Shards == 0 && len(r.Errors) > 0 {
		return r, &Error{Msg: r.Errors[0], Result: "invalid"}
	}
	return r, nil
}

// reply is the gateway's answer to a command.
type reply struct {
	OK           bool   `json:"ok"`
	Nonce        string `json:"nonce"`
	Error        string `json:"error"`
	Result       string `json:"result"`
	RetryAfterMS int64  `json:"retry_after_ms"`
}

// replyError turns a {"ok":…} reply into nil or an *Error.
func replyError(data []byte) error {
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("reply %q: %w", data, err)
	}
	if r.OK {
		return nil
	}
	return &Error{Msg: r.Error, Result: r.Result, RetryAfter: time.Duration(r.RetryAfterMS) * time.Millisecond}
}

// newRequest builds a command request whose TimeoutHeader leaves the reply
// time to come back before ctx's deadline.
func newRequest(ctx context.Context, subject string, cmd Command) (*nats.Msg, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(subject)
	msg.Data = b
	if dl, ok := ctx.Deadline(); ok {
		wait := time.Until(dl) * 9 / 10
		msg.Header.Set(TimeoutHeader, strconv.FormatInt(max(wait.Milliseconds(), 1), 10))
	}
	return msg, nil
}

func requestError(err error) error {
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrNoInstance
	}
	return err
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
