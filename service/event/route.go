package event

// Discord dispatch types the gateway publishes, plus the one it inspects.
const (
	dispatchGuildCreate       = "GUILD_CREATE"
	dispatchGuildDelete       = "GUILD_DELETE"
	dispatchGuildMemberAdd    = "GUILD_MEMBER_ADD"
	dispatchGuildMemberRemove = "GUILD_MEMBER_REMOVE"
	dispatchGuildMemberUpdate = "GUILD_MEMBER_UPDATE"
	dispatchInteractionCreate = "INTERACTION_CREATE"
)

// Route reports the event_type and NATS subject a dispatch type is published
// as; ok is false for dispatch types the gateway does not publish.
//
// Route looks at the type only: a GUILD_DELETE is routed even though Build
// drops the ones that announce an outage (unavailable: true).
func Route(t string) (eventType, subject string, ok bool) {
	// A switch on constant strings compiles to a length-then-compare search
	// and does not allocate, which a map lookup keyed by t would not beat.
	switch t {
	case dispatchGuildCreate:
		return "guild.join", "events.guild.join", true
	case dispatchGuildDelete:
		return "guild.leave", "events.guild.leave", true
	case dispatchGuildMemberAdd:
		return "member.join", "events.member.join", true
	case dispatchGuildMemberRemove:
		return "member.leave", "events.member.leave", true
	case dispatchGuildMemberUpdate:
		return "member.update", "events.member.update", true
	case dispatchInteractionCreate:
		// Interactions go to their own subject space (the COMMANDS stream)
		// because command handlers need them within Discord's 3 s window and
		// keep them for a much shorter time than membership events.
		return "interaction.create", "commands.interaction", true
	}
	return "", "", false
}

// guildIsSelf reports whether a dispatch's body is the guild itself, so its
// guild ID is the top-level "id" rather than "guild_id".
func guildIsSelf(t string) bool {
	return t == dispatchGuildCreate || t == dispatchGuildDelete
}
