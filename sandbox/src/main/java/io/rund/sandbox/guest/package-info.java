/**
 * What the daemon asks of a guest, as records: a container to create, a process to run,
 * limits to apply, the network to take. The agent client ({@code io.rund.sandbox.agent})
 * is the only code that turns them into agent.proto messages; the rest of the daemon
 * never sees one.
 */
package io.rund.sandbox.guest;
