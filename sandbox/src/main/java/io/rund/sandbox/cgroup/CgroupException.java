package io.rund.sandbox.cgroup;

/** A cgroup operation failed; the message names the cgroup and the file. */
public final class CgroupException extends Exception {

    private static final long serialVersionUID = 1L;

    public CgroupException(String message) {
        super(message);
    }

    public CgroupException(String message, Throwable cause) {
        super(message, cause);
    }
}
