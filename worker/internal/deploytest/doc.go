// Package deploytest checks statically that the container stack
// (compose/compose.yaml) configures the workers with settings the worker
// reads, sets the required ones, and starts them after what they need.
// The rest of the stack is checked by the gateway module's deploytest.
//
// The package has no code of its own; everything is in its tests.
package deploytest
