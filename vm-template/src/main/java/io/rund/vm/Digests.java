package io.rund.vm;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/** SHA-256, the one digest rund computes: of guest files (template keys, `rund check`) and of names. */
public final class Digests {

    private Digests() {}

    /** A SHA-256 digest to update. */
    public static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK always has SHA-256", e);
        }
    }

    /** Adds the bytes of {@code file} to {@code digest}. */
    public static void update(MessageDigest digest, Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) {
                digest.update(buf, 0, n);
            }
        }
    }

    /** The SHA-256 of {@code file}, in hex. */
    public static String sha256(Path file) throws IOException {
        MessageDigest d = sha256();
        update(d, file);
        return HexFormat.of().formatHex(d.digest());
    }
}
