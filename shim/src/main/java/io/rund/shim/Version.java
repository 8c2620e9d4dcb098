package io.rund.shim;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/**
 * What build this is: the project version, the git commit it was built from (with
 * "-dirty" when the tree had uncommitted changes) and the build date, as the build wrote
 * them into version.properties (shim/pom.xml). The launcher prints the same three for
 * {@code -v}, in the same shape as containerd's own shims.
 */
public record Version(String version, String commit, String date) {

    /** This build's; fields the build could not fill read "unknown". */
    public static final Version CURRENT = load();

    private static Version load() {
        Properties p = new Properties();
        try (InputStream in = Version.class.getResourceAsStream("version.properties")) {
            if (in != null) {
                p.load(in);
            }
        } catch (IOException e) {
            // an unreadable resource is a broken jar; the fields say unknown
        }
        String commit = known(p.getProperty("commit"));
        if ("true".equals(p.getProperty("dirty")) && !commit.equals("unknown")) {
            commit += "-dirty";
        }
        return new Version(known(p.getProperty("version")), commit, known(p.getProperty("date")));
    }

    /** A property the build left unfilled reads as its own placeholder, "${...}". */
    private static String known(String v) {
        return v == null || v.isBlank() || v.startsWith("${") ? "unknown" : v;
    }

    /** The block `rund version` prints for {@code name}, as containerd's shims print theirs. */
    public String describe(String name) {
        return name + ":\n  Version:    " + version + "\n  Revision:   " + commit + "\n  Build date: " + date + "\n";
    }

    /** One line for logs: "0.1.0 (commit abc, built 2026-...)". */
    @Override
    public String toString() {
        return version + " (commit " + commit + ", built " + date + ")";
    }
}
