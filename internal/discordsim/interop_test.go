package discordsim

import (
	"context"
	"testing"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"
	"github.com/diamondburned/arikawa/v3/utils/ws"
)

// TestArikawaInterop runs arikawa's gateway client, an independent Discord
// client implementation, against the simulator: it must identify, receive
// READY and GUILD_CREATEs, survive a dropped connection by resuming, and see
// dispatches made while it was away. arikawa allows one dial per 5s, so the
// resume makes this test take about 5s.
func TestArikawaInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~5s (arikawa's dial rate limit)")
	}
	srv := startServer(t, Config{GuildsPerShard: 2, MembersPerGuild: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()

	id := gateway.DefaultIdentifier(srv.cfg.Token)
	id.Shard = &gateway.Shard{0, 1}
	opts := gateway.DefaultGatewayOpts
	opts.ReconnectDelay = func(int) time.Duration { return 50 * time.Millisecond }
	g := gateway.NewCustomWithIdentifier(gateway.AddGatewayParams(srv.GatewayURL()), id, &opts)
	g.AddIntents(gateway.IntentGuilds | gateway.IntentGuildMembers)
	ops := g.Connect(ctx)

	next := func(want func(ws.Event) bool) ws.Event {
		t.Helper()
		for {
			select {
			case op, ok := <-ops:
				if !ok {
					t.Fatalf("arikawa gateway stopped: %v", g.LastError())
				}
				if want(op.Data) {
					return op.Data
				}
			case <-ctx.Done():
				t.Fatal("timed out waiting for arikawa")
			}
		}
	}
	ready := next(func(e ws.Event) bool { _, ok := e.(*gateway.ReadyEvent); return ok }).(*gateway.ReadyEvent)
	if ready.SessionID != srv.CurrentSession(0) || len(ready.Guilds) != 2 || ready.User.ID.String() != srv.BotUserID() {
		t.Fatalf("READY as parsed by arikawa: session %q guilds %d user %v", ready.SessionID, len(ready.Guilds), ready.User.ID)
	}
	for i := 0; i < 2; i++ {
		gc := next(func(e ws.Event) bool { _, ok := e.(*gateway.GuildCreateEvent); return ok }).(*gateway.GuildCreateEvent)
		if len(gc.Members) != 3 || gc.Name == "" {
			t.Fatalf("GUILD_CREATE as parsed by arikawa: %d members, name %q", len(gc.Members), gc.Name)
		}
	}

	// Drop the connection and dispatch while the client is away.
	if err := srv.WaitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := srv.Drop(0); err != nil {
		t.Fatal(err)
	}
	guild := ready.Guilds[0].ID.String()
	user := memberUserID(guild, 7)
	if _, err := srv.Dispatch(0, "GUILD_MEMBER_ADD", srv.MemberAddBody(guild, user)); err != nil {
		t.Fatal(err)
	}
	add := next(func(e ws.Event) bool { _, ok := e.(*gateway.GuildMemberAddEvent); return ok }).(*gateway.GuildMemberAddEvent)
	if add.User.ID.String() != user {
		t.Fatalf("member add user %v, want %s", add.User.ID, user)
	}
	next(func(e ws.Event) bool { _, ok := e.(*gateway.ResumedEvent); return ok })
	rec := srv.Record()
	if len(rec.Resumes) != 1 || rec.Resumes[0].Outcome != ResumeResumed || len(rec.Identifies) != 1 {
		t.Fatalf("resumes %+v identifies %+v", rec.Resumes, rec.Identifies)
	}
	if rec.Identifies[0].APIVersion != 9 { // arikawa v3.6.0 speaks v9
		t.Errorf("identify %+v", rec.Identifies[0])
	}
	if len(rec.Violations) != 0 {
		t.Errorf("arikawa caused violations: %+v", rec.Violations)
	}
	cancel()
	for range ops { // let arikawa finish before the server goes away
	}
}
