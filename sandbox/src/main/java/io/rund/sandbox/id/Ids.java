package io.rund.sandbox.id;

import io.rund.vm.Digests;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import java.util.regex.Pattern;

/**
 * The one rule for the ids containerd hands rund (sandbox, container and task ids: they name
 * directories, cgroups and sockets on the host), and the short names made of ids too long for
 * a socket path.
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
        return HexFormat.of().formatHex(Digests.sha256().digest(s.getBytes(StandardCharsets.UTF_8)), 0, 8);
    }
}
