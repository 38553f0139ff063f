// Package discordsim is an in-process simulator of the Discord gateway
// (API v10, JSON encoding) and of the one REST route a gateway client needs
// (GET /gateway/bot). It stands in for Discord in unit tests, integration
// tests, demos and load tests, so it follows Discord's documented behaviour
// closely and records everything a client does that Discord would punish
// (identify bucket overruns, late heartbeats, send-rate overruns, protocol
// errors) instead of silently tolerating it.
//
// # Protocol summary
//
//   - GET /api/v10/gateway/bot (Authorization: Bot <token>) returns the
//     websocket URL, the recommended shard count and the session start limit.
//   - The websocket lives at /gateway; the resume_gateway_url handed out in
//     READY points at /resume so tests can tell where a client resumed.
//     Query parameters v (10, or 9 which Discord still serves; others are
//     closed with 4012), encoding=json and optionally compress=zlib-stream
//     or compress=zstd-stream are honoured. Payload compression requested
//     by IDENTIFY's "compress": true is ignored, which Discord's docs allow
//     ("not all payloads will be compressed"). Each payload is one
//     websocket message unless SetSplit cuts zlib-stream payloads into
//     several (see Fault injection).
//   - The server sends HELLO, expects IDENTIFY or RESUME, answers heartbeats,
//     numbers every dispatch of a session from 1 and keeps a replay log so a
//     RESUME replays exactly what was missed, followed by RESUMED.
//
// # Discord behaviours reproduced on purpose
//
//   - Identifying faster than one IDENTIFY per bucket (shard_id %
//     max_concurrency) per IdentifyWindow is answered with op 9 (d=false), as
//     the docs describe; the violation is recorded. Config.LenientIdentify
//     turns the rejection off (the violation is still recorded).
//   - IDENTIFY with session_start_limit.remaining == 0 mimics Discord's "token
//     reset": the violation is recorded, every live connection is closed with
//     4004, every session is invalidated and the token stops working (REST
//     answers 401) until SetSessionStartRemaining is called.
//     Config.SessionLimitInvalidSession answers such an IDENTIFY with op 9
//     (d=false) instead and keeps the token. remaining goes back to
//     SessionStartTotal each time Config.SessionStartResetAfter (default
//     24h) has passed; /gateway/bot's reset_after counts down to that.
//   - A client close frame with code 1000 or 1001 invalidates the session
//     (Discord: "your session will be invalidated"); any other code, or a
//     dropped TCP connection, leaves it resumable until SessionTimeout.
//   - Dispatches produced while a session has no live connection are
//     appended to its log and replayed on RESUME. So is every dispatch a
//     client missed, whatever its size: a dispatch too big for the client
//     comes back after each RESUME until the client gets past it.
//   - A client that does not drain its socket fills the per-connection
//     queue and is dropped (TCP close, no close frame); its session stays
//     resumable.
//   - The load generator only produces events whose intents the session
//     requested (and blanks message content without MESSAGE_CONTENT).
//     Dispatch, the test hook, does not filter.
//   - IDENTIFY validation: wrong or missing token 4004, bad shard 4010,
//     missing/invalid intents 4013, DisallowedIntents 4014, missing
//     properties 4002; a missing shard means [0, 1] as on Discord. Bad
//     JSON 4002, payloads over 4096 bytes 4002, unknown or receive-only
//     opcodes 4001, anything but heartbeats before IDENTIFY/RESUME 4003,
//     a second IDENTIFY/RESUME 4005, RESUME with a seq beyond the session
//     4007. RESUME with an unknown, expired or invalidated session, a wrong
//     token, or a seq older than the replay window gets op 9 (d=false).
//
// # Several shard counts at once (resharding)
//
// Discord lets sessions with different shard counts run side by side, the
// way to reshard without downtime. With Config.Guilds set the bot is in
// that many guilds (UniverseGuildID, spread evenly over any shard count),
// and a session identified as [shard, total] holds the guilds with
// (guild_id >> 22) % total == shard: READY lists them and a GUILD_CREATE
// follows for each. Every generated dispatch belongs to one guild and
// reaches every valid session holding it, one per live shard count, with
// the same body; EventRate then counts per guild, so the traffic stays the
// same while a second count comes up and the first goes away. The ledger
// gives each copy the guild and a Key the copies share (SentDispatch), so
// a test can check that every dispatch was stored once across two counts;
// DispatchGuild is the test hook that routes one dispatch the same way.
// Each connection holds every frame for its own random delay up to
// Config.ConnDelay (2ms by default in this mode), without reordering, so
// the two copies of a dispatch arrive at slightly different times, in
// either order. Identify buckets (shard % max_concurrency) and the session
// start budget are shared by every count, as at Discord.
//
// An IDENTIFY whose session would hold more than Config.MaxGuildsPerShard
// guilds (default 2500, Discord's documented limit; SetMaxGuildsPerShard
// changes it) is closed with 4011 "Sharding required." (outcome
// IdentifyShardingRequired), after it took its identify bucket and a
// session start. SetRecommendedShards raises /gateway/bot's shards as
// Discord does for a growing bot.
//
// # Fault injection
//
// Tests break things per shard, on its current connection: Drop (TCP gone
// without a close frame), CloseWith (any close code; the ones after which
// Discord wants a new session also invalidate it), Reconnect (op 7),
// InvalidSession (op 9, resumable or not), WithholdAcks (a zombie
// connection), SendRaw (malformed frames, not logged for replay), Dispatch
// with an oversized body (logged, so replayed on RESUME), SetWriteDelay,
// which delays every frame written to the shard by a fixed time (a slow
// path, for as long as it is set), and SetSplit, which sends each
// zlib-stream payload of the shard as several websocket messages cut at
// arbitrary points, some inside the 00 00 ff ff suffix, as Discord's docs
// warn clients to expect. zstd-stream is never split: Discord documents one
// gateway message per websocket message for it.
//
// # Recording
//
// Record returns every IDENTIFY and RESUME (with outcome), every close
// frame received from clients, every violation and every action the
// simulator took (closes, drops, op 7/9, ...), and each shard's connections
// from their IDENTIFY or RESUME to their end (ShardConns, named by
// Config.ConnLabel when a test runs several clients), so that Overlaps finds
// a shard live on two connections at once. Dispatches is the ledger of
// generated dispatches with a flag telling whether each reached a socket.
// With the defaults the ledger and the replay logs grow with traffic; long
// load runs should set LedgerLimit and a smaller ReplayLimit.
//
// Several Servers can run in one process; nothing is global.
package discordsim
