package io.rund.shim.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.shim.Version;
import io.rund.shim.control.Daemon;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The `rund` command's words, exit codes and lines, and `rund check` on a host that lacks
 * what rund needs: a guest directory without its artifacts, a store on tmpfs (no reflink),
 * containerd configurations with and without rund's runtime entry. No daemon runs here;
 * CtrRunTest checks a host that has everything, with the daemon up and down.
 */
class CliTest {

    private record Run(int exit, String out, String err) {}

    private static Run rund(Map<String, String> env, String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int exit = Cli.run(List.of(args), env, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(exit, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    /** A configuration of the test's own: nothing of the machine's /etc/rund or /run/rund. */
    private static Map<String, String> env(Path dir, String toml) throws Exception {
        Path config = Files.writeString(dir.resolve("rund.toml"), "state_dir = \"" + dir.resolve("state") + "\"\n" + toml);
        Map<String, String> env = new HashMap<>();
        env.put("RUND_CONFIG", config.toString());
        env.put("PATH", dir.resolve("bin").toString());
        env.put("RUND_CONTAINERD_CONFIG", dir.resolve("containerd.toml").toString());
        env.put("RUND_DAEMON", dir.resolve("bin/rund-daemon").toString());
        env.put("RUND_JAILER", dir.resolve("bin/rund-jail").toString());
        return env;
    }

    @Test
    void helpPrintsTheUsageAndSucceeds(@TempDir Path dir) throws Exception {
        for (String word : List.of("help", "--help", "-h")) {
            Run r = rund(env(dir, ""), word);
            assertEquals(0, r.exit(), word);
            assertTrue(r.out().startsWith("usage: rund check"), r.out());
            for (String command : List.of("rund status", "rund template build", "rund version", "rund help")) {
                assertTrue(r.out().contains(command), command + " in " + r.out());
            }
            assertEquals("", r.err());
        }
    }

    @Test
    void unknownWordsExitTwoWithTheUsage(@TempDir Path dir) throws Exception {
        for (String[] args : List.of(new String[] {"stauts"}, new String[] {"template", "bild"}, new String[] {"--verison"},
                new String[] {})) {
            Run r = rund(env(dir, ""), args);
            assertEquals(2, r.exit(), String.join(" ", args));
            assertTrue(r.err().contains(args.length == 0 ? "rund: no command" : "rund: unknown command: "
                    + String.join(" ", args)), r.err());
            assertTrue(r.err().contains("usage: rund check"), r.err());
            assertEquals("", r.out());
        }
    }

    @Test
    void versionPrintsVersionCommitAndDateWithoutADaemon(@TempDir Path dir) throws Exception {
        for (String word : List.of("version", "--version")) {
            Run r = rund(env(dir, ""), word);
            assertEquals(0, r.exit(), r.toString());
            // Built from this git checkout: the build filled every field.
            assertTrue(Pattern.compile("""
                    rund:
                      Version:    \\d+\\.\\d+\\.\\d+(-SNAPSHOT)?
                      Revision:   [0-9a-f]{12}(-dirty)?
                      Build date: \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ
                      Java:       25.*
                      Daemon:     not running \\(.*/state/rund.sock\\)
                    """).matcher(r.out()).matches(), r.out());
        }
        assertTrue(Version.CURRENT.toString().matches("\\S+ \\(commit [0-9a-f]{12}(-dirty)?, built \\S+\\)"),
                Version.CURRENT.toString());
    }

    @Test
    void checkFailsNamingTheMissingGuestAndTheStoreWithoutReflink(@TempDir Path dir) throws Exception {
        Path guest = Files.createDirectories(dir.resolve("guest"));
        // tmpfs cannot clone files: the store must be refused, and the probe must leave nothing.
        Path store = Files.createTempDirectory(Path.of("/dev/shm"), "rund-check-store-");
        try {
            Run r = rund(env(dir, "guest_dir = \"" + guest + "\"\nscratch = \"" + store + "\"\ntemplates = \"off\"\n"), "check");
            assertEquals(1, r.exit(), r.out());
            assertTrue(r.out().contains("\nfail  guest kernel     " + guest.resolve("vmlinux")
                    + " is missing (hack/build-guest builds and installs it)\n"), r.out());
            assertTrue(r.out().contains("\nfail  guest initramfs  " + guest.resolve("initramfs.cpio") + " is missing"), r.out());
            assertTrue(Pattern.compile("\nfail  layer store +clone a probe file in " + Pattern.quote(store.toString())
                    + ": this filesystem cannot clone files \\(.*\\); the store must be on XFS with reflink=1 or on btrfs")
                    .matcher(r.out()).find(), r.out());
            assertTrue(r.out().startsWith("ok    daemon           not running (no " + dir.resolve("state/rund.sock")), r.out());
            assertTrue(r.out().contains("\nok    templates        off: every VM boots cold\n"), r.out());
            assertTrue(r.out().contains("\nfail  launcher         containerd-shim-rund-v2 is not on PATH"), r.out());
            assertTrue(r.out().contains("\nfail  vm confinement   jailer " + dir.resolve("bin/rund-jail") + " is missing"),
                    r.out());
            assertTrue(r.out().endsWith("rund cannot run sandboxes on this host: vm confinement, guest kernel, guest initramfs, "
                    + "layer store, launcher, daemon command failed\n"), r.out());
            try (Stream<Path> left = Files.list(store)) {
                assertEquals(List.of(), left.toList(), "the clone probe removes its files");
            }
            assertTrue(!Files.exists(dir.resolve("state")), "check creates no state directory");
        } finally {
            try (Stream<Path> left = Files.list(store)) {
                for (Path p : left.toList()) {
                    Files.delete(p);
                }
            }
            Files.delete(store);
        }
    }

    @Test
    void checkReadsContainerdsRuntimeEntries(@TempDir Path dir) throws Exception {
        Map<String, String> env = env(dir, "templates = \"off\"\n");
        Path toml = Path.of(env.get("RUND_CONTAINERD_CONFIG"));
        assertTrue(line(env, "containerd").startsWith("warn  containerd       no " + toml + ": containerd runs with its defaults"));

        Files.writeString(toml, "version = 2\n");
        assertTrue(line(env, "containerd").contains("has no CRI runtimes table"), line(env, "containerd"));

        String rund = """
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rund]
                  runtime_type = "io.containerd.rund.v2"
                """;
        Files.writeString(toml, "version = 2\n" + rund);
        assertTrue(line(env, "containerd").contains("lists rund but not runc"), line(env, "containerd"));

        String runc = """
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                  runtime_type = "io.containerd.runc.v2"
                """;
        Files.writeString(toml, "version = 2\n" + runc);
        assertTrue(line(env, "containerd").contains("CRI has no runtime handler rund with runtime_type io.containerd.rund.v2"),
                line(env, "containerd"));

        Files.writeString(toml, "version = 2\n" + rund + runc);
        assertEquals("ok    containerd       " + toml + " has CRI runtime handlers rund (io.containerd.rund.v2) and runc",
                line(env, "containerd"));
        // containerd 2.x's configuration (version 3) keeps CRI's runtimes under another plugin.
        Files.writeString(toml, ("version = 3\n" + rund + runc).replace("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"));
        assertTrue(line(env, "containerd").startsWith("ok    containerd"), line(env, "containerd"));

        Files.writeString(toml, "version = = 2\n");
        Run r = rund(env, "check");
        assertEquals(1, r.exit());
        assertTrue(line(env, "containerd").startsWith("fail  containerd       " + toml + " does not parse as TOML"),
                line(env, "containerd"));
    }

    private static String line(Map<String, String> env, String check) {
        Run r = rund(env, "check");
        return r.out().lines().filter(l -> l.matches("(ok|warn|fail) +" + Pattern.quote(check) + " .*")).findFirst()
                .orElseThrow(() -> new AssertionError("no " + check + " line in:\n" + r.out()));
    }

    /** Yama's scope decides whether the back-ends can read their VM's memory; 2 and 3 fail the check. */
    @Test
    void checkSaysWhetherYamaLetsTheBackEndsReachTheirVm(@TempDir Path dir) throws Exception {
        assertEquals(HostCheck.Level.OK, HostCheck.ptraceScope(dir.resolve("absent")).level());
        for (String scope : List.of("0", "1", "2", "3")) {
            Path f = Files.writeString(dir.resolve("scope" + scope), scope + "\n");
            HostCheck.Line line = HostCheck.ptraceScope(f);
            assertEquals(scope.equals("0") || scope.equals("1") ? HostCheck.Level.OK : HostCheck.Level.FAIL, line.level(),
                    line.toString());
            assertTrue(line.detail().contains("ptrace_scope " + scope), line.detail());
        }
    }
}
