package io.rund.ttrpc;

import java.io.IOException;

/**
 * A frame announced a payload over {@link Frame#MAX_PAYLOAD}. The reader has already
 * skipped the payload, so the stream stays in step and the connection can live on; the
 * receiver answers (or fails) the one stream the frame belonged to.
 */
public final class OversizedFrameException extends IOException {

    private static final long serialVersionUID = 1L;

    private final int streamId;
    private final byte type;
    private final long length;

    OversizedFrameException(int streamId, byte type, long length) {
        super("message length " + length + " exceeds the maximum message size of " + Frame.MAX_PAYLOAD);
        this.streamId = streamId;
        this.type = type;
        this.length = length;
    }

    public int streamId() {
        return streamId;
    }

    public byte type() {
        return type;
    }

    public long length() {
        return length;
    }
}
