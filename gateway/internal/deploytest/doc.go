// Package deploytest checks the container stack (compose/compose.yaml, the
// Dockerfiles and the proxy configuration it uses) statically, without a
// container engine: the settings given to the gateways are ones the
// gateway reads, images are pinned, every service has a health check, the
// start order holds, Kafka replicates as required, the proxy's ports and
// upstreams match the gateways and no secret is written into the file.
//
// The package has no code of its own; everything is in its tests.
package deploytest
