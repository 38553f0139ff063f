# Nomad job: the Discord gateway shard pool, one pool per allocation.
#
#   nomad var put nomad/jobs/discord-gateway \
#     discord_token=... drain_token=$(openssl rand -hex 32) consul_token=...
#   nomad job run -var image=registry.example.com/discord-gateway:1.4.0 \
#     -var count=4 -var total_shards=100 -var nats_url=nats://nats.service.consul:4222 \
#     deploy/nomad/discord-gateway.nomad.hcl
#
# deploy/README.md walks through a rolling deploy; deploy/nomad_test.go and
# cmd/gateway/deploy_test.go keep this file true to the service.

variable "image" {
  type        = string
  description = "The gateway image (docker build at the repo root), pinned to a version: a rolling deploy is a change of this value."
}

variable "count" {
  type        = number
  default     = 4
  description = "Instances. The first ceil(total_shards / shards_per_pool) to claim a pool in Consul run one each; any more wait as hot spares and take over a pool whose owner dies."
}

variable "total_shards" {
  type        = number
  default     = 100
  description = "The bot's shard count, the same for every pool (never auto in production: Discord's recommendation can change between two pools' starts)."
}

variable "shards_per_pool" {
  type    = number
  default = 25
}

variable "nats_url" {
  type    = string
  default = "nats://nats.service.consul:4222"
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "discord-gateway" {
  datacenters = var.datacenters
  type        = "service"

  # One deployment moves one instance at a time: the old one drains on
  # SIGTERM and writes its shards' hand-off records to Consul, then the new
  # one claims the freed pool and RESUMEs them (no IDENTIFY, no lost event).
  update {
    max_parallel = 1
    # There is no Nomad service block (see the group), so "checks" means the
    # task must run, without restarting, for min_healthy_time. Long enough
    # for a new instance to claim its pool and resume; an instance that
    # cannot start (bad token, identify budget too low) exits non-zero first.
    health_check      = "checks"
    min_healthy_time  = "45s"
    healthy_deadline  = "5m"
    progress_deadline = "10m"
    auto_revert       = true
  }

  group "gateway" {
    count = var.count

    # No Nomad `service` block: the gateway registers itself in Consul
    # (CONSUL_HTTP_ADDR below), because Consul, not Nomad, decides which pool
    # an instance runs (a lock on <KV_PREFIX>/pools/<generation>/<id>), and the service
    # puts that pool_id and its shard range in the registration's meta,
    # with checks on /health and /ready that its Consul session is tied to.
    # Nomad cannot know the pool id when it registers a service, so a Nomad
    # registration would be a second, meta-less entry of the same instances.

    network {
      # Host networking: the port the process binds is the port Consul's
      # check and Prometheus reach, with no mapping to register.
      mode = "host"
      port "http" {}
    }

    # Spread pools over nodes: a node failure then costs one pool (which a
    # spare or a rescheduled instance resumes), not the bot.
    spread {
      attribute = "${node.unique.id}"
    }

    # A restart with no hand-off record IDENTIFYs every shard of the pool,
    # and Discord allows 1000 session starts a day per bot (running out
    # resets the token): at most 2 quick restarts, then reschedule elsewhere
    # with exponential backoff, never a tight loop.
    restart {
      attempts = 2
      interval = "30m"
      delay    = "30s"
      mode     = "fail"
    }

    reschedule {
      delay          = "1m"
      delay_function = "exponential"
      max_delay      = "30m"
      unlimited      = true
    }

    task "gateway" {
      driver = "docker"

      config {
        image           = var.image
        network_mode    = "host"
        readonly_rootfs = true
        cap_drop        = ["all"]
      }

      # SIGTERM drains: shards closed with a resumable code, the publish
      # buffer flushed to JetStream, hand-off records written; the process
      # exits 0 within DRAIN_TIMEOUT (20s). kill_timeout must exceed it or
      # Nomad's SIGKILL cuts the drain short; it also must not exceed the
      # client's max_kill_timeout (30s by default), which caps it silently.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      env {
        TOTAL_SHARDS    = var.total_shards
        SHARDS_PER_POOL = var.shards_per_pool
        # POOL_ID is deliberately unset: each instance claims a free pool
        # id in Consul.
        NATS_URL = var.nats_url
        # Must match deploy/nats/*.json (a test checks): file storage, three
        # replicas on the NATS cluster, so a NATS restart loses nothing.
        STREAM_STORAGE  = "file"
        STREAM_REPLICAS = 3
        HTTP_PORT       = "${NOMAD_PORT_http}"
        # What Consul's checks and Prometheus connect to: the host address
        # of the port (the agent below is reached over loopback, which is
        # not an address anyone else can use).
        SERVICE_ADDRESS = "${NOMAD_IP_http}"
        LOG_LEVEL       = "info"
        DRAIN_TIMEOUT   = "20s"
        # The node's own Consul agent: sessions are tied to its node.
        CONSUL_HTTP_ADDR = "127.0.0.1:8500"
        SERVICE_NAME     = "discord-gateway"
        KV_PREFIX        = "discord-gateway"
        # Read by the Go runtime: collect harder near the memory limit
        # instead of being OOM-killed (see resources). Unset, the gateway
        # would use 90% of the cgroup's limit: memory_max under
        # oversubscription, above the memory reserved here.
        GOMEMLIMIT = "400MiB"
        # Checkpoints: every 5 s (CHECKPOINT_INTERVAL, the default) each
        # shard's resume record goes to Consul under the pool lock, so the
        # successor of a crashed (SIGKILL, OOM-killed) instance RESUMEs too.
      }

      # A single instance without Consul (CONSUL_HTTP_ADDR unset, POOL_ID
      # set, count = 1) keeps those records in SESSION_STATE_FILE on a
      # persistent volume instead, so that it RESUMEs after a crash or a
      # restart. The root filesystem is read-only: the file needs a volume,
      # writable by the image's user. Uncomment, with in the group
      #
      #   volume "state" {
      #     type      = "host"
      #     source    = "discord-gateway-state" # host_volume in the client's config
      #     read_only = false
      #   }
      #
      # and in this task
      #
      #   volume_mount {
      #     volume      = "state"
      #     destination = "/var/lib/discord-gateway"
      #   }
      #
      # and in env
      #
      #   SESSION_STATE_FILE = "/var/lib/discord-gateway/sessions.json"
      #
      # Only one instance may use the file: two would resume the same
      # sessions.

      # Secrets come from Nomad variables (the job's workload identity may
      # read nomad/jobs/discord-gateway), rendered into the task's private
      # secrets/ dir and exported as env; never inline in this file. With
      # Vault instead, add a vault {} block and use
      #   {{ with secret "kv/data/discord-gateway" }}DISCORD_TOKEN={{ .Data.data.discord_token }}{{ end }}
      template {
        destination = "secrets/gateway.env"
        env         = true
        # A rotated secret restarts the task (SIGTERM: drain, hand-off,
        # resume), the allocations spread over splay so the pools do not
        # all restart at once.
        change_mode = "restart"
        splay       = "5m"
        data        = <<-EOT
        {{- with nomadVar "nomad/jobs/discord-gateway" }}
        DISCORD_TOKEN={{ .discord_token }}
        DRAIN_TOKEN={{ .drain_token }}
        CONSUL_HTTP_TOKEN={{ .consul_token }}
        {{- end }}
        EOT
      }

      # Measured (deploy/README.md, "Sizing"): the production binary with 25
      # shards against the Discord simulator, 1000 guilds per shard (Discord's
      # recommended shard size), NATS JetStream connected:
      #   RSS 90-92 MB steady, 105-117 MB peak while 25,000 GUILD_CREATEs
      #   arrive; CPU 0.09 core at 500 events/s, 0.29 core at 5,000 events/s.
      #   During a NATS outage the publish buffer fills to BUFFER_MAX_BYTES
      #   (256 MiB, 240k events): RSS 458 MiB without a memory limit for the
      #   Go runtime.
      # memory covers a full buffer; GOMEMLIMIT (400MiB) keeps the heap under
      # it; memory_max (used where memory oversubscription is enabled) is
      # headroom, not the plan.
      resources {
        cpu        = 500
        memory     = 512
        memory_max = 768
      }
    }
  }
}
