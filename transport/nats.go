package transport

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/go-kit/kit/transport"
	natstransport "github.com/go-kit/kit/transport/nats"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service/shard"
)

// The command path's NATS subjects.
const (
	// PlanSubject answers {"total_shards","shards_per_pool","pools"}.
	PlanSubject = "gateway.plan"
	// PresenceSubject takes the bot's presence, an op 3 d; every instance
	// sends it on every shard it runs.
	PresenceSubject = "gateway.presence"
	// QueueGroup is the queue group of the request subjects: one instance
	// answers each request.
	QueueGroup = "gateway"
)

// Reply messages on an op 8's reply subject: the {"ok":…} reply has no
// ReplyHeader; each GUILD_MEMBERS_CHUNK's d comes with ReplyHeader "chunk"
// (and ChunkLastHeader "true" on the last).
const (
	ReplyHeader     = "Gateway-Reply"
	ReplyChunk      = "chunk"
	ChunkLastHeader = "Gateway-Chunk-Last"
)

// SendSubject is the request subject of shard id's commands.
func SendSubject(shardID int) string { return "gateway.shards." + strconv.Itoa(shardID) + ".send" }

// maxConcurrentCommands bounds the requests of one shard served at once;
// past it a request is refused at once (the shard lets 64 wait anyway).
const maxConcurrentCommands = 64

// NewNATSSendHandler serves shard shardID's send subject with go-kit's NATS
// transport. Requests are served concurrently (a command may wait for the
// send budget), at most maxConcurrentCommands at once; an op 8's chunks and
// RATE_LIMITED are published to the request's reply subject.
func NewNATSSendHandler(e endpoint.Set, nc *nats.Conn, shardID int, logger log.Logger) nats.MsgHandler {
	sub := natstransport.NewSubscriber(e.SendEndpoint, decodeNATSSend(nc, shardID), natstransport.EncodeJSONResponse,
		natstransport.SubscriberErrorEncoder(encodeNATSSendError),
		natstransport.SubscriberErrorHandler(transport.NewLogErrorHandler(logger)),
	)
	serve := sub.ServeMsg(nc)
	slots := make(chan struct{}, maxConcurrentCommands)
	return func(msg *nats.Msg) {
		select {
		case slots <- struct{}{}:
			go func() {
				defer func() { <-slots }()
				serve(msg)
			}()
		default:
			if msg.Reply != "" {
				b, _ := json.Marshal(endpoint.SendResponse{Error: "too many commands in flight for this shard", Result: shard.ResultNoBudget, RetryAfterMS: 1000})
				_ = nc.Publish(msg.Reply, b)
			}
		}
	}
}

// decodeNATSSend reads a command request; its deadline comes in
// TimeoutHeader, and an op 8's replies go to msg.Reply.
func decodeNATSSend(nc *nats.Conn, shardID int) natstransport.DecodeRequestFunc {
	return func(_ context.Context, msg *nats.Msg) (interface{}, error) {
		var cmd shard.Command
		if err := json.Unmarshal(msg.Data, &cmd); err != nil {
			return nil, badRequest("the request must be a gateway command {\"op\":3|4|8,\"d\":{...}}: " + err.Error())
		}
		timeout, err := parseTimeout(msg.Header.Get(TimeoutHeader))
		if err != nil {
			return nil, badRequest(err.Error())
		}
		req := endpoint.SendRequest{ShardID: shardID, Command: cmd, Timeout: timeout}
		if msg.Reply != "" && cmd.Op == shard.OpRequestGuildMembers {
			req.Reply = replyTo(nc, msg.Reply)
		}
		return req, nil
	}
}

// replyTo publishes an op 8's replies to subject, in the order they come
// (one NATS connection keeps it).
func replyTo(nc *nats.Conn, subject string) shard.ReplyFunc {
	return func(r shard.Reply) {
		if r.RateLimited {
			resp := endpoint.SendFailure(&shard.CommandError{Result: shard.ResultRateLimited, Msg: "Discord rate limited the request (RATE_LIMITED)", RetryAfter: r.RetryAfter}, "")
			b, _ := json.Marshal(resp)
			_ = nc.Publish(subject, b)
			return
		}
		m := &nats.Msg{Subject: subject, Data: r.Chunk, Header: nats.Header{ReplyHeader: []string{ReplyChunk}}}
		if r.Last {
			m.Header.Set(ChunkLastHeader, "true")
		}
		_ = nc.PublishMsg(m) // copies Data before returning
	}
}

func encodeNATSSendError(_ context.Context, err error, reply string, nc *nats.Conn) {
	b, _ := json.Marshal(endpoint.SendResponse{Error: err.Error(), Result: shard.ResultInvalid})
	_ = nc.Publish(reply, b)
}

// NewNATSPlanHandler answers PlanSubject with go-kit's NATS transport.
func NewNATSPlanHandler(e endpoint.Set, nc *nats.Conn, logger log.Logger) nats.MsgHandler {
	sub := natstransport.NewSubscriber(e.PlanEndpoint, natstransport.NopRequestDecoder,
		func(ctx context.Context, reply string, nc *nats.Conn, response interface{}) error {
			return natstransport.EncodeJSONResponse(ctx, reply, nc, response.(endpoint.PlanResponse).Plan)
		},
		natstransport.SubscriberErrorHandler(transport.NewLogErrorHandler(logger)),
	)
	return sub.ServeMsg(nc)
}
