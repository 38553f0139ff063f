package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/shard"
	"github.com/shardpool/gateway/transport"
)

// presenceBucket keeps the last presence in JetStream, so an instance that
// starts later identifies with it too.
const (
	presenceBucket = "gateway_presence"
	presenceKey    = "presence"
)

// presenceSendTimeout bounds the op 3 of one presence message on a shard.
const presenceSendTimeout = 10 * time.Second

// commandPath is the wiring of the command path: the Send and Plan
// endpoints, each running shard's send subject (subscribed while the shard
// runs), gateway.plan and gateway.presence. Without NATS (local mode) only
// HTTP serves it.
type commandPath struct {
	logger    log.Logger
	endpoints endpoint.Set // SendEndpoint, PlanEndpoint
	shards    shard.CommandConfig
	pool      func() *service.Pool // the pool the instance runs now, or nil

	nc     *nats.Conn // nil in local mode
	subs   []*nats.Subscription
	stop   context.CancelFunc
	done   sync.WaitGroup
	kvMu   sync.Mutex
	kv     jetstream.KeyValue // nil until the bucket answered
	setSeq uint64             // presence messages seen, so a late load does not undo one
}

// openCommandPath builds the command path, before the pools: every shard's
// CommandConfig comes from it.
func (m *Main) openCommandPath() error {
	cfg := m.Config
	names, err := event.ParseExtraEvents(cfg.ExtraEvents)
	if err != nil {
		return fmt.Errorf("invalid EXTRA_EVENTS: %w", err)
	}
	router, err := event.NewRouter(names)
	if err != nil {
		return fmt.Errorf("invalid EXTRA_EVENTS: %w", err)
	}
	cp := &commandPath{logger: m.logger, pool: func() *service.Pool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.currentPool()
	}}
	cp.endpoints.SendEndpoint = endpoint.MakeSendEndpoint(cp)
	cp.endpoints.PlanEndpoint = endpoint.MakePlanFuncEndpoint(m.currentPlan) // changes with a resharding
	cp.shards = shard.CommandConfig{
		Intents: cfg.Intents, Events: router, Presence: &shard.Presence{},
		Metrics: shard.NewCommandMetrics(m.reg), OnRun: cp.onRun, Budget: cfg.SendBudget,
	}
	m.commands = cp
	if m.nats == nil {
		return nil
	}
	cp.nc = m.nats.nc
	return cp.subscribe(cfg)
}

// subscribe answers gateway.plan (one instance per request) and takes
// gateway.presence (every instance), and loads the last presence.
func (cp *commandPath) subscribe(cfg Config) error {
	plan, err := cp.nc.QueueSubscribe(transport.PlanSubject, transport.QueueGroup, transport.NewNATSPlanHandler(cp.endpoints, cp.nc, cp.logger))
	if err != nil {
		return err
	}
	presence, err := cp.nc.Subscribe(transport.PresenceSubject, cp.onPresence)
	if err != nil {
		plan.Unsubscribe()
		return err
	}
	cp.subs = []*nats.Subscription{plan, presence}
	ctx, stop := context.WithCancel(context.Background())
	cp.stop = stop
	// The first try before the shards start, so that their first IDENTIFY
	// has the stored presence; then in the background until JetStream
	// answers.
	js, err := jetstream.New(cp.nc)
	if err != nil {
		return err
	}
	kvCfg := presenceBucketConfig(cfg)
	if cp.nc.IsConnected() && cp.loadPresence(ctx, js, kvCfg) {
		return nil
	}
	cp.done.Add(1)
	go func() {
		defer cp.done.Done()
		for delay := time.Second; !cp.loadPresence(ctx, js, kvCfg); delay = min(2*delay, 30*time.Second) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}()
	return nil
}

func presenceBucketConfig(cfg Config) jetstream.KeyValueConfig {
	storage := jetstream.MemoryStorage
	if cfg.StreamStorage == "file" {
		storage = jetstream.FileStorage
	}
	return jetstream.KeyValueConfig{Bucket: presenceBucket, History: 1, Storage: storage, Replicas: cfg.StreamReplicas}
}

// close ends what subscribe started; the shards' subjects end with them.
func (cp *commandPath) close() {
	for _, s := range cp.subs {
		s.Unsubscribe()
	}
	if cp.stop != nil {
		cp.stop()
		cp.done.Wait()
	}
}

// Send implements service.Commander over the pool the instance runs now.
func (cp *commandPath) Send(ctx context.Context, shardID int, cmd shard.Command, reply shard.ReplyFunc) (string, error) {
	p := cp.pool()
	if p == nil {
		return "", service.NotHere(shardID)
	}
	return p.Send(ctx, shardID, cmd, reply)
}

// onRun subscribes a shard's send subject while it runs, in a queue group:
// while a drained instance and its successor overlap, one of them answers.
func (cp *commandPath) onRun(s *shard.Shard) func() {
	if cp.nc == nil {
		return func() {}
	}
	subject := transport.SendSubject(s.ID())
	sub, err := cp.nc.QueueSubscribe(subject, transport.QueueGroup, transport.NewNATSSendHandler(cp.endpoints, cp.nc, s.ID(), cp.logger))
	if err != nil {
		level.Error(cp.logger).Log("msg", "cannot subscribe to the shard's commands", "subject", subject, "err", err)
		return func() {}
	}
	return func() {
		sub.Unsubscribe()
		// A round trip, so the server has dropped the interest before the
		// drain or fence returns: a request sent after it gets "no
		// responders" at once, not a timeout from a closed subscription.
		cp.nc.FlushTimeout(time.Second)
	}
}

// presenceReply is what an instance answers a presence message with.
type presenceReply struct {
	OK     bool     `json:"ok"`
	Shards int      `json:"shards"` // shards the op 3 was written on
	Errors []string `json:"errors,omitempty"`
}

// onPresence takes the bot's presence: kept for every later IDENTIFY, sent
// as op 3 on every shard the instance runs, stored for later instances.
func (cp *commandPath) onPresence(msg *nats.Msg) {
	var reply presenceReply
	if err := cp.shards.Presence.Set(msg.Data); err != nil {
		level.Warn(cp.logger).Log("msg", "presence refused", "err", err)
		reply.Errors = []string{err.Error()}
	} else {
		cp.kvMu.Lock()
		cp.setSeq++
		cp.kvMu.Unlock()
		reply = cp.broadcast(cp.shards.Presence.Get())
		cp.storePresence(cp.shards.Presence.Get())
	}
	if msg.Reply != "" {
		b, _ := json.Marshal(reply)
		msg.Respond(b)
	}
}

// broadcast sends the presence as op 3 on each running shard at once.
func (cp *commandPath) broadcast(d json.RawMessage) presenceReply {
	p := cp.pool()
	if p == nil {
		return presenceReply{OK: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), presenceSendTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	reply := presenceReply{OK: true}
	for _, s := range p.Shards() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Send(ctx, s.ID(), shard.Command{Op: shard.OpPresenceUpdate, D: d}, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				reply.Errors = append(reply.Errors, err.Error())
				return
			}
			reply.Shards++
		}()
	}
	wg.Wait()
	reply.OK = len(reply.Errors) == 0
	return reply
}

// storePresence keeps d in the presence bucket, best effort: without it
// only the instances running now know the presence.
func (cp *commandPath) storePresence(d json.RawMessage) {
	cp.kvMu.Lock()
	kv := cp.kv
	cp.kvMu.Unlock()
	if kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, presenceKey, d); err != nil {
		level.Warn(cp.logger).Log("msg", "cannot store the presence for later instances", "err", err)
	}
}

// loadPresence opens the presence bucket and takes the stored presence,
// unless a presence message came first; it reports whether JetStream
// answered.
func (cp *commandPath) loadPresence(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) bool {
	cp.kvMu.Lock()
	seen := cp.setSeq
	cp.kvMu.Unlock()
	d, err := cp.openPresence(ctx, js, cfg)
	if err != nil {
		level.Debug(cp.logger).Log("msg", "presence bucket not ready", "err", err)
		return false
	}
	cp.kvMu.Lock()
	defer cp.kvMu.Unlock()
	if d != nil && cp.setSeq == seen {
		if err := cp.shards.Presence.Set(d); err != nil {
			level.Warn(cp.logger).Log("msg", "stored presence refused", "err", err)
		}
	}
	return true
}

// openPresence opens (or creates) the bucket and returns the stored
// presence, nil when there is none.
func (cp *commandPath) openPresence(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cp.kvMu.Lock()
	cp.kv = kv
	cp.kvMu.Unlock()
	e, err := kv.Get(ctx, presenceKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// shardCommands is every shard's CommandConfig (the zero one once the
// command path is released).
func (m *Main) shardCommands() shard.CommandConfig {
	if m.commands == nil {
		return shard.CommandConfig{}
	}
	return m.commands.shards
}
