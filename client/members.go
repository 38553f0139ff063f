package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go"
)

// MembersRequest is op 8's d (request guild members) without the nonce:
// the gateway gives the request one and routes the chunks back by it.
// Give Query (with Limit; "" and 0 ask for every member) or UserIDs.
type MembersRequest struct {
	GuildID   string   `json:"guild_id"`
	Query     *string  `json:"query,omitempty"`
	Limit     *int     `json:"limit,omitempty"`
	Presences bool     `json:"presences,omitempty"`
	UserIDs   []string `json:"user_ids,omitempty"`
}

// AllMembers asks for every member of guildID. Discord allows it once per
// guild per 30 s; a second one is answered with an *Error of Result
// rate_limited and its RetryAfter.
func AllMembers(guildID string) MembersRequest {
	query, limit := "", 0
	return MembersRequest{GuildID: guildID, Query: &query, Limit: &limit}
}

// Chunk is one GUILD_MEMBERS_CHUNK, members and presences left raw.
type Chunk struct {
	GuildID    string            `json:"guild_id"`
	Members    []json.RawMessage `json:"members"`
	ChunkIndex int               `json:"chunk_index"`
	ChunkCount int               `json:"chunk_count"`
	NotFound   []json.RawMessage `json:"not_found,omitempty"`
	Presences  []json.RawMessage `json:"presences,omitempty"`
	Nonce      string            `json:"nonce"`
}

// MemberIdle bounds the wait for the next chunk when ctx has no deadline.
const MemberIdle = 10 * time.Second

// Members requests members of req.GuildID from its shard and yields the
// chunks in order, the last with ChunkIndex = ChunkCount-1. An error (the
// gateway refused, Discord rate limited, ctx ended) is yielded once and
// ends the sequence.
func (c *Client) Members(ctx context.Context, req MembersRequest) iter.Seq2[Chunk, error] {
	return func(yield func(Chunk, error) bool) {
		if err := c.members(ctx, req, yield); err != nil {
			yield(Chunk{}, err)
		}
	}
}

func (c *Client) members(ctx context.Context, req MembersRequest, yield func(Chunk, error) bool) error {
	shardID, err := c.ShardFor(ctx, req.GuildID)
	if err != nil {
		return err
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	reqCtx, cancel := withDefaultTimeout(ctx)
	msg, err := newRequest(reqCtx, SendSubject(shardID), Command{Op: OpRequestGuildMembers, D: req})
	cancel()
	if err != nil {
		return err
	}
	msg.Reply = inbox
	if err := c.nc.PublishMsg(msg); err != nil {
		return err
	}
	for {
		next, cancel := withIdle(ctx)
		m, err := sub.NextMsgWithContext(next)
		cancel()
		if errors.Is(err, nats.ErrNoResponders) {
			return ErrNoInstance
		}
		if err != nil {
			return fmt.Errorf("waiting for member chunks of guild %s: %w", req.GuildID, err)
		}
		switch {
		case m.Header.Get("Status") == "503":
			return ErrNoInstance
		case m.Header.Get(ReplyHeader) == "chunk":
			var ch Chunk
			if err := json.Unmarshal(m.Data, &ch); err != nil {
				return fmt.Errorf("member chunk: %w", err)
			}
			if !yield(ch, nil) || m.Header.Get(ChunkLastHeader) == "true" {
				return nil
			}
		default:
			// The {"ok":…} reply: it may come after the first chunks.
			if err := replyError(m.Data); err != nil {
				return err
			}
		}
	}
}

// withIdle bounds one wait: ctx's own deadline, else MemberIdle.
func withIdle(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, MemberIdle)
}
