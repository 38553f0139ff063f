# Consul ACL policy of the gateway: the least it needs, for SERVICE_NAME and
# KV_PREFIX at their defaults (discord-gateway; change both names together
# with the Nomad job's env). deploy/consul_test.go checks it.
#
#   consul acl policy create -name discord-gateway -rules @deploy/consul/discord-gateway-policy.hcl
#   consul acl token create -description "discord-gateway" -policy-name discord-gateway
#   # store the token's SecretID as consul_token in the Nomad variable
#
# What the service does with it (discovery/):
#   - registers and deregisters itself (agent/service/register) with its pool
#     id and shard range in the meta and checks on /health and /ready;
#   - creates, renews and destroys a session on its node (session/create, tied
#     to the node's serfHealth and its /health check);
#   - reads its own checks back (agent/checks), so that registering again
#     does not restart Consul's count of failed /health probes;
#   - takes and releases locks and reads and writes records under KV_PREFIX:
#       <KV_PREFIX>/plan                                 the fleet's shard plan
#       <KV_PREFIX>/plan-next                            the next generation's, while resharding
#       <KV_PREFIX>/reshard-lock                         held to hand over, cut over or auto-reshard
#       <KV_PREFIX>/pools/<generation>/<id>              pool locks (the claimed pool id)
#       <KV_PREFIX>/identify/<bucket>                    identify coordination per bucket
#       <KV_PREFIX>/handoff/<generation>/<pool>/<shard>  hand-off records of a drain
#     (deploy/README.md documents the layout).

# Its own service only: registration, its checks, and reading it back.
service "discord-gateway" {
  policy = "write"
}

# Sessions on its node. A policy cannot name "the node this token is used
# on", and Nomad may place an instance on any client node, so this allows
# sessions on every node; where the gateway runs on a node class with a name
# prefix, narrow it (session_prefix "gateway-").
session_prefix "" {
  policy = "write"
}

# Its KV prefix only. The trailing slash keeps it from matching a sibling
# such as discord-gateway-staging/.
key_prefix "discord-gateway/" {
  policy = "write"
}
