package io.rund.sandbox.network;

/** A pod network that cannot be read or connected; the message names the namespace or command. */
public final class NetworkException extends Exception {
    public NetworkException(String message) {
        super(message);
    }
}
