package discordsim

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// discordEpoch is the Discord snowflake epoch (2015-01-01T00:00:00Z) in ms.
const discordEpoch = 1420070400000

// guildBaseMs is the snowflake timestamp (ms since discordEpoch) of the first
// generated guild: 2022-01-01, so ids look like real ones (18-19 digits).
const guildBaseMs = 220924800000

// userBaseMs is the timestamp base of generated user ids (2019).
const userBaseMs = 126230400000

func snowflake(ms int64, worker, proc, inc uint64) uint64 {
	return uint64(ms)<<22 | (worker&31)<<17 | (proc&31)<<12 | inc&4095
}

func idString(id uint64) string { return strconv.FormatUint(id, 10) }

func parseID(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

// GuildIDForShard returns the n-th (n >= 0) generated guild id that Discord
// would route to shard of total: (id >> 22) % total == shard. Ids are
// deterministic, distinct for distinct (shard, n) at a given total, and used
// by READY/GUILD_CREATE for the simulator's own guilds.
func GuildIDForShard(shard, total, n int) string {
	if total < 1 {
		total = 1
	}
	t := int64(total)
	ms := guildBaseMs - guildBaseMs%t + int64(n)*t + int64(shard)
	return idString(snowflake(ms, 1, 0, uint64(n)))
}

// ShardForGuild applies Discord's sharding formula (guild_id >> 22) % total.
func ShardForGuild(guildID string, total int) (int, error) {
	id, err := strconv.ParseUint(guildID, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("discordsim: bad guild id %q: %w", guildID, err)
	}
	if total < 1 {
		return 0, fmt.Errorf("discordsim: bad shard total %d", total)
	}
	return int((id >> 22) % uint64(total)), nil
}

// memberUserID is the id of the idx-th generated member of a guild. It is a
// pure function so GUILD_CREATE, member chunks and generated events agree.
func memberUserID(guildID string, idx int) string {
	g := parseID(guildID)
	ms := userBaseMs + int64(idx)*977 + int64(g%9973)
	return idString(snowflake(ms, 2, 1, uint64(idx)))
}

func roleID(guildID string, k int) string {
	if k == 0 {
		return guildID // @everyone shares the guild's id
	}
	return idString(snowflake(int64(parseID(guildID)>>22)+1, 3, 0, uint64(k)))
}

func channelID(guildID string, k int) string {
	return idString(snowflake(int64(parseID(guildID)>>22)+2, 4, 0, uint64(k)))
}

// mix is splitmix64; it derives stable pseudo-random attributes from ids.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

var (
	adjectives = []string{"amber", "brisk", "cosmic", "dusty", "eager", "fuzzy", "gentle", "hollow", "icy", "jolly", "lunar", "mellow", "nimble", "opal", "quiet", "rusty", "silent", "tidy", "velvet", "wild"}
	nouns      = []string{"otter", "falcon", "maple", "comet", "badger", "willow", "pixel", "harbor", "ember", "lynx", "tundra", "quartz", "raven", "cedar", "nova", "fox", "koala", "marlin", "sparrow", "yeti"}
	guildNames = []string{"Gaming Hub", "Study Group", "Art Corner", "Dev Lounge", "Music Club", "Anime Den", "Book Nook", "Speedrunners", "Homelab", "Photography"}
	phrases    = []string{
		"anyone up for a match tonight?",
		"just pushed the fix, can someone review",
		"lol that's exactly what happened to me",
		"the new update broke my build again",
		"good morning everyone!",
		"has anyone tried the beta yet",
		"brb grabbing coffee",
		"check the pinned messages for the schedule",
	}
	locales = []string{"en-US", "en-GB", "de", "fr", "es-ES", "pt-BR", "ja", "pl"}
)

func pick(list []string, h uint64) string { return list[h%uint64(len(list))] }

// hash32 returns a 32 hex char asset hash like Discord avatar hashes.
func hash32(h uint64) string {
	var b [16]byte
	a, c := mix(h), mix(h^0xabcdef)
	for i := 0; i < 8; i++ {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	return hex.EncodeToString(b[:])
}

func strp(s string) *string { return &s }

// discordTime formats t the way Discord formats ISO8601 timestamps.
func discordTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000+00:00")
}

// snowflakeTime returns the creation time encoded in a snowflake.
func snowflakeTime(id uint64) time.Time {
	return time.UnixMilli(int64(id>>22) + discordEpoch)
}

type apiUser struct {
	ID                   string  `json:"id"`
	Username             string  `json:"username"`
	GlobalName           *string `json:"global_name"`
	Avatar               *string `json:"avatar"`
	Discriminator        string  `json:"discriminator"`
	PublicFlags          int     `json:"public_flags"`
	Flags                int     `json:"flags"`
	Bot                  bool    `json:"bot,omitempty"`
	Banner               *string `json:"banner"`
	AccentColor          *int    `json:"accent_color"`
	AvatarDecorationData any     `json:"avatar_decoration_data"`
	Collectibles         any     `json:"collectibles"`
	PrimaryGuild         any     `json:"primary_guild"`
	Clan                 any     `json:"clan"`
}

func userFor(userID string) apiUser {
	h := mix(parseID(userID))
	name := pick(adjectives, h) + "_" + pick(nouns, h>>8) + strconv.Itoa(int(h>>16)%1000)
	u := apiUser{
		ID:            userID,
		Username:      name,
		Discriminator: "0",
		PublicFlags:   int(h>>24) & 64, // some users carry HypeSquad flags
	}
	u.Flags = u.PublicFlags
	if h&3 != 0 {
		u.GlobalName = strp(pick(adjectives, h>>32) + " " + pick(nouns, h>>40))
	}
	if h&7 != 0 {
		u.Avatar = strp(hash32(h))
	}
	return u
}

type apiMember struct {
	GuildID                    string   `json:"guild_id,omitempty"`
	User                       *apiUser `json:"user,omitempty"`
	Nick                       *string  `json:"nick"`
	Avatar                     *string  `json:"avatar"`
	Banner                     *string  `json:"banner"`
	Roles                      []string `json:"roles"`
	JoinedAt                   string   `json:"joined_at"`
	PremiumSince               *string  `json:"premium_since"`
	Deaf                       bool     `json:"deaf"`
	Mute                       bool     `json:"mute"`
	Pending                    bool     `json:"pending"`
	Flags                      int      `json:"flags"`
	CommunicationDisabledUntil *string  `json:"communication_disabled_until"`
	UnusualDMActivityUntil     *string  `json:"unusual_dm_activity_until"`
	AvatarDecorationData       any      `json:"avatar_decoration_data"`
	Permissions                string   `json:"permissions,omitempty"`
}

func memberFor(guildID, userID string, joined time.Time) apiMember {
	h := mix(parseID(userID) ^ parseID(guildID))
	u := userFor(userID)
	m := apiMember{
		User:     &u,
		Roles:    []string{},
		JoinedAt: discordTime(joined),
	}
	if h%4 == 0 {
		m.Nick = strp(pick(nouns, h>>4) + " the " + pick(adjectives, h>>12))
	}
	if h%3 != 0 {
		m.Roles = append(m.Roles, roleID(guildID, 2))
	}
	if h%10 == 0 {
		m.Roles = append(m.Roles, roleID(guildID, 1))
	}
	if h%17 == 0 {
		m.PremiumSince = strp(discordTime(joined.Add(90 * 24 * time.Hour)))
	}
	return m
}

// generatedMember is the idx-th member of a generated guild.
func generatedMember(guildID string, idx int) apiMember {
	uid := memberUserID(guildID, idx)
	joined := snowflakeTime(parseID(guildID)).Add(time.Duration(idx+1) * 37 * time.Minute)
	return memberFor(guildID, uid, joined)
}

type apiRole struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Description  *string           `json:"description"`
	Color        int               `json:"color"`
	Colors       map[string]any    `json:"colors"`
	Hoist        bool              `json:"hoist"`
	Icon         *string           `json:"icon"`
	UnicodeEmoji *string           `json:"unicode_emoji"`
	Position     int               `json:"position"`
	Permissions  string            `json:"permissions"`
	Managed      bool              `json:"managed"`
	Mentionable  bool              `json:"mentionable"`
	Flags        int               `json:"flags"`
	Tags         map[string]string `json:"tags,omitempty"`
}

func roleColors(c int) map[string]any {
	return map[string]any{"primary_color": c, "secondary_color": nil, "tertiary_color": nil}
}

type apiChannel struct {
	ID                   string  `json:"id"`
	Type                 int     `json:"type"`
	GuildID              string  `json:"guild_id,omitempty"`
	Name                 string  `json:"name"`
	Position             int     `json:"position"`
	PermissionOverwrites []any   `json:"permission_overwrites"`
	ParentID             *string `json:"parent_id"`
	Topic                *string `json:"topic,omitempty"`
	NSFW                 bool    `json:"nsfw"`
	LastMessageID        *string `json:"last_message_id,omitempty"`
	RateLimitPerUser     int     `json:"rate_limit_per_user"`
	Bitrate              int     `json:"bitrate,omitempty"`
	UserLimit            *int    `json:"user_limit,omitempty"`
	RTCRegion            *string `json:"rtc_region,omitempty"`
	Flags                int     `json:"flags"`
}

type apiGuild struct {
	ID                          string       `json:"id"`
	Name                        string       `json:"name"`
	Icon                        *string      `json:"icon"`
	Description                 *string      `json:"description"`
	HomeHeader                  *string      `json:"home_header"`
	Splash                      *string      `json:"splash"`
	DiscoverySplash             *string      `json:"discovery_splash"`
	Banner                      *string      `json:"banner"`
	OwnerID                     string       `json:"owner_id"`
	ApplicationID               *string      `json:"application_id"`
	Region                      string       `json:"region"`
	AFKChannelID                *string      `json:"afk_channel_id"`
	AFKTimeout                  int          `json:"afk_timeout"`
	SystemChannelID             *string      `json:"system_channel_id"`
	SystemChannelFlags          int          `json:"system_channel_flags"`
	WidgetEnabled               bool         `json:"widget_enabled"`
	WidgetChannelID             *string      `json:"widget_channel_id"`
	VerificationLevel           int          `json:"verification_level"`
	DefaultMessageNotifications int          `json:"default_message_notifications"`
	ExplicitContentFilter       int          `json:"explicit_content_filter"`
	MFALevel                    int          `json:"mfa_level"`
	NSFWLevel                   int          `json:"nsfw_level"`
	NSFW                        bool         `json:"nsfw"`
	Roles                       []apiRole    `json:"roles"`
	Emojis                      []any        `json:"emojis"`
	Stickers                    []any        `json:"stickers"`
	Features                    []string     `json:"features"`
	RulesChannelID              *string      `json:"rules_channel_id"`
	PublicUpdatesChannelID      *string      `json:"public_updates_channel_id"`
	SafetyAlertsChannelID       *string      `json:"safety_alerts_channel_id"`
	VanityURLCode               *string      `json:"vanity_url_code"`
	PremiumTier                 int          `json:"premium_tier"`
	PremiumSubscriptionCount    int          `json:"premium_subscription_count"`
	PremiumProgressBarEnabled   bool         `json:"premium_progress_bar_enabled"`
	PreferredLocale             string       `json:"preferred_locale"`
	MaxMembers                  int          `json:"max_members"`
	MaxVideoChannelUsers        int          `json:"max_video_channel_users"`
	MaxStageVideoChannelUsers   int          `json:"max_stage_video_channel_users"`
	HubType                     *int         `json:"hub_type"`
	IncidentsData               any          `json:"incidents_data"`
	Latest                      any          `json:"latest_onboarding_question_id"`
	Version                     int64        `json:"version"`
	JoinedAt                    string       `json:"joined_at"`
	Large                       bool         `json:"large"`
	Lazy                        bool         `json:"lazy"`
	Unavailable                 bool         `json:"unavailable"`
	MemberCount                 int          `json:"member_count"`
	VoiceStates                 []any        `json:"voice_states"`
	Members                     []apiMember  `json:"members"`
	Channels                    []apiChannel `json:"channels"`
	Threads                     []any        `json:"threads"`
	Presences                   []any        `json:"presences"`
	StageInstances              []any        `json:"stage_instances"`
	GuildScheduledEvents        []any        `json:"guild_scheduled_events"`
	SoundboardSounds            []any        `json:"soundboard_sounds"`
	EmbeddedActivities          []any        `json:"embedded_activities"`
	ActivityInstances           []any        `json:"activity_instances"`
	ApplicationCommandCounts    any          `json:"application_command_counts"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("discordsim: marshal body: " + err.Error()) // only our own types are marshalled
	}
	return b
}

// guildChannels is the fixed channel layout of a generated guild; the text
// channel indexes are used by generated messages and interactions.
func guildChannels(guildID string) []apiChannel {
	textCat, voiceCat := channelID(guildID, 0), channelID(guildID, 4)
	ul := 0
	return []apiChannel{
		{ID: textCat, Type: 4, Name: "Text Channels", Position: 0, PermissionOverwrites: []any{}},
		{ID: channelID(guildID, 1), Type: 0, Name: "general", Position: 0, PermissionOverwrites: []any{}, ParentID: &textCat, Topic: strp("Say hi!"), LastMessageID: strp(idString(snowflake(int64(parseID(guildID)>>22)+3600_000, 0, 0, 1)))},
		{ID: channelID(guildID, 2), Type: 0, Name: "random", Position: 1, PermissionOverwrites: []any{}, ParentID: &textCat, LastMessageID: nil},
		{ID: channelID(guildID, 3), Type: 5, Name: "announcements", Position: 2, PermissionOverwrites: []any{map[string]any{"id": guildID, "type": 0, "allow": "0", "deny": "2048"}}, ParentID: &textCat},
		{ID: voiceCat, Type: 4, Name: "Voice Channels", Position: 1, PermissionOverwrites: []any{}},
		{ID: channelID(guildID, 5), Type: 2, Name: "General", Position: 0, PermissionOverwrites: []any{}, ParentID: &voiceCat, Bitrate: 64000, UserLimit: &ul},
	}
}

// textChannels are the channel indexes messages are generated in.
var textChannels = []int{1, 2}

// GuildCreateBody returns a realistic GUILD_CREATE d for guildID with the
// given number of members in members[] (member_count equals it). shard is
// only used to name the guild, which makes routing mistakes easy to spot.
func (s *Server) GuildCreateBody(shard int, guildID string, members int) []byte {
	return mustJSON(s.guildObject(shard, guildID, members))
}

func (s *Server) guildObject(shard int, guildID string, members int) apiGuild {
	gid := parseID(guildID)
	h := mix(gid)
	created := snowflakeTime(gid)
	owner := memberUserID(guildID, 0)
	g := apiGuild{
		ID:                          guildID,
		Name:                        fmt.Sprintf("%s %d (shard %d)", pick(guildNames, h), h%1000, shard),
		OwnerID:                     owner,
		Region:                      "deprecated",
		AFKTimeout:                  300,
		SystemChannelID:             strp(channelID(guildID, 1)),
		VerificationLevel:           int(h % 4),
		DefaultMessageNotifications: 1,
		ExplicitContentFilter:       2,
		PreferredLocale:             pick(locales, h>>7),
		MaxMembers:                  500000,
		MaxVideoChannelUsers:        25,
		MaxStageVideoChannelUsers:   50,
		Version:                     created.UnixMilli(),
		JoinedAt:                    discordTime(created.Add(24 * time.Hour)),
		Large:                       members > 50,
		Lazy:                        true,
		MemberCount:                 members,
		Emojis:                      []any{},
		Stickers:                    []any{},
		Features:                    []string{},
		VoiceStates:                 []any{},
		Threads:                     []any{},
		Presences:                   []any{},
		StageInstances:              []any{},
		GuildScheduledEvents:        []any{},
		SoundboardSounds:            []any{},
		EmbeddedActivities:          []any{},
		ActivityInstances:           []any{},
		Channels:                    guildChannels(guildID),
		Members:                     make([]apiMember, 0, members),
	}
	if h&1 == 0 {
		g.Icon = strp(hash32(h))
	}
	if h%5 == 0 {
		g.Features = append(g.Features, "COMMUNITY", "NEWS", "WELCOME_SCREEN_ENABLED")
		g.RulesChannelID = strp(channelID(guildID, 3))
		g.PublicUpdatesChannelID = strp(channelID(guildID, 3))
	}
	g.Roles = []apiRole{
		{ID: roleID(guildID, 0), Name: "@everyone", Colors: roleColors(0), Permissions: "2248473465835073", Position: 0},
		{ID: roleID(guildID, 1), Name: "Moderator", Color: 3447003, Colors: roleColors(3447003), Hoist: true, Position: 3, Permissions: "1099511627775", Mentionable: true},
		{ID: roleID(guildID, 2), Name: "Member", Color: 10181046, Colors: roleColors(10181046), Position: 1, Permissions: "0"},
		{ID: roleID(guildID, 3), Name: "shardpool", Position: 2, Colors: roleColors(0), Permissions: "274878221376", Managed: true, Tags: map[string]string{"bot_id": s.botUserID}},
	}
	for i := 0; i < members; i++ {
		g.Members = append(g.Members, generatedMember(guildID, i))
	}
	return g
}

// GuildDeleteBody returns a GUILD_DELETE d. With unavailable=false the field
// is omitted, which Discord uses to signal the bot was removed from the guild.
func (s *Server) GuildDeleteBody(guildID string, unavailable bool) []byte {
	if unavailable {
		return mustJSON(map[string]any{"id": guildID, "unavailable": true})
	}
	return mustJSON(map[string]any{"id": guildID})
}

// MemberAddBody returns a GUILD_MEMBER_ADD d (a guild member with guild_id).
func (s *Server) MemberAddBody(guildID, userID string) []byte {
	m := memberFor(guildID, userID, time.Now())
	m.GuildID = guildID
	m.Roles = []string{}
	return mustJSON(m)
}

// MemberRemoveBody returns a GUILD_MEMBER_REMOVE d.
func (s *Server) MemberRemoveBody(guildID, userID string) []byte {
	u := userFor(userID)
	return mustJSON(struct {
		GuildID string  `json:"guild_id"`
		User    apiUser `json:"user"`
	}{guildID, u})
}

// MemberUpdateBody returns a GUILD_MEMBER_UPDATE d.
func (s *Server) MemberUpdateBody(guildID, userID string) []byte {
	m := memberFor(guildID, userID, snowflakeTime(parseID(guildID)).Add(48*time.Hour))
	m.GuildID = guildID
	return mustJSON(m)
}

// InteractionCreateBody returns an INTERACTION_CREATE d for a slash command
// (type 2) invoked by userID in channelID of guildID.
func (s *Server) InteractionCreateBody(guildID, channelID, userID string) []byte {
	now := time.Now()
	n := s.idCounter.Add(1)
	id := idString(snowflake(now.UnixMilli()-discordEpoch, 5, 2, n))
	m := memberFor(guildID, userID, snowflakeTime(parseID(guildID)).Add(72*time.Hour))
	m.Permissions = "2248473465835073"
	token := base64.RawURLEncoding.EncodeToString([]byte("interaction:" + id + ":" + hash32(n) + hash32(n+1)))
	locale := pick(locales, mix(parseID(userID)))
	body := map[string]any{
		"version":             1,
		"type":                2,
		"token":               token,
		"member":              m,
		"locale":              locale,
		"id":                  id,
		"guild_locale":        "en-US",
		"guild_id":            guildID,
		"guild":               map[string]any{"locale": "en-US", "id": guildID, "features": []string{}},
		"entitlements":        []any{},
		"entitlement_sku_ids": []any{},
		"data": map[string]any{
			"type": 1, "name": "ping", "id": idString(snowflake(guildBaseMs, 6, 0, 1)),
			"options": []any{map[string]any{"type": 3, "name": "target", "value": pick(nouns, n)}},
		},
		"context":    0,
		"channel_id": channelID,
		"channel": map[string]any{
			"type": 0, "topic": nil, "rate_limit_per_user": 0, "position": 0, "permissions": "2248473465835073",
			"parent_id": nil, "nsfw": false, "name": "general", "last_message_id": nil, "id": channelID,
			"guild_id": guildID, "flags": 0,
		},
		"authorizing_integration_owners": map[string]string{"0": guildID},
		"application_id":                 s.appID,
		"app_permissions":                "2248473465835073",
		"attachment_size_limit":          10485760,
	}
	return mustJSON(body)
}

// MessageCreateBody returns a MESSAGE_CREATE d. The content is empty unless
// withContent is set, as Discord blanks it without the MESSAGE_CONTENT intent.
func (s *Server) MessageCreateBody(guildID, channelID, userID string, withContent bool) []byte {
	now := time.Now()
	n := s.idCounter.Add(1)
	m := memberFor(guildID, userID, snowflakeTime(parseID(guildID)).Add(72*time.Hour))
	author := *m.User
	m.User = nil
	content := ""
	if withContent {
		content = pick(phrases, mix(n))
	}
	body := map[string]any{
		"type":             0,
		"tts":              false,
		"timestamp":        discordTime(now),
		"pinned":           false,
		"nonce":            strconv.FormatUint(mix(n)>>12, 10),
		"mentions":         []any{},
		"mention_roles":    []any{},
		"mention_everyone": false,
		"member":           m,
		"id":               idString(snowflake(now.UnixMilli()-discordEpoch, 7, 3, n)),
		"flags":            0,
		"embeds":           []any{},
		"edited_timestamp": nil,
		"content":          content,
		"components":       []any{},
		"channel_type":     0,
		"channel_id":       channelID,
		"author":           author,
		"attachments":      []any{},
		"guild_id":         guildID,
	}
	return mustJSON(body)
}

// TypingStartBody returns a TYPING_START d.
func (s *Server) TypingStartBody(guildID, channelID, userID string) []byte {
	m := memberFor(guildID, userID, snowflakeTime(parseID(guildID)).Add(72*time.Hour))
	return mustJSON(map[string]any{
		"user_id":    userID,
		"timestamp":  time.Now().Unix(),
		"member":     m,
		"channel_id": channelID,
		"guild_id":   guildID,
	})
}

// PresenceUpdateBody returns a PRESENCE_UPDATE d.
func (s *Server) PresenceUpdateBody(guildID, userID string) []byte {
	h := mix(parseID(userID) ^ uint64(time.Now().UnixNano()))
	statuses := []string{"online", "idle", "dnd", "offline"}
	status := statuses[h%4]
	clientStatus := map[string]string{}
	activities := []any{}
	if status != "offline" {
		clientStatus[[]string{"desktop", "mobile", "web"}[(h>>4)%3]] = status
		if h&0x100 != 0 {
			activities = append(activities, map[string]any{
				"type": 0, "name": pick(guildNames, h>>9), "id": hash32(h)[:16],
				"created_at": time.Now().UnixMilli(),
				"timestamps": map[string]int64{"start": time.Now().Add(-time.Duration(h%7200) * time.Second).UnixMilli()},
			})
		}
	}
	return mustJSON(map[string]any{
		"user":          map[string]string{"id": userID},
		"status":        status,
		"guild_id":      guildID,
		"client_status": clientStatus,
		"activities":    activities,
	})
}
