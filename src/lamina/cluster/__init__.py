"""Cluster mode: several Lamina nodes on one PostgreSQL database and one NATS JetStream
cluster (`lamina serve --cluster`). The seams are named in `cluster.api`; the single-node
default implements each of them locally (`cluster.local`)."""
