package io.rund.sandbox.id;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.regex.Pattern;

/**
 * The one rule for the ids containerd hands rund (sandbox, container and task ids: they name
 * directories, cgroups and sockets on the host), the short names made of ids too long for a
 * socket path, and the SHA-256 digests rund computes.
 */
public final class Ids {

    private static final Pattern ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    /** What every refusal of an id says the rule is. */
    public static final String RULE = "1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit";
    /** Ids up to this long name their directory themselves. */
    private static final int DIR_NAME_MAX = 40;

    private Ids() {}

    public static boolean isValid(String id) {
        return id != null && ID.matcher(id).matches();
    }

    /**
     * The name of an id's directory: the id, or for a longer id (CRI's are 64 hex digits) its
     * first 16 characters, a dot and {@link #shortHash} of it, so that the sockets in the
     * directory stay within the 107 bytes a unix socket address holds. A directory name is
     * its own name, and a valid id.
     */
    public static String dirName(String id) {
        return id.length() <= DIR_NAME_MAX ? id : id.substring(0, 16) + "." + shortHash(id);
    }

    /** 16 hex digits of the SHA-256 of {@code s}: a short, stable name. */
    public static String shortHash(String s) {
        return HexFormat.of().formatHex(sha256().digest(s.getBytes(StandardCharsets.UTF_8)), 0, 8);
    }

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
