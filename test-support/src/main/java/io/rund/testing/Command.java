package io.rund.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/** Runs a program to completion within a bound, keeping what it printed. */
public final class Command {

    /** How a finished program ended, and what it printed. */
    public record Result(List<String> argv, int exitCode, String stdout, String stderr) {

        /** This result, or a failure that shows everything the program said. */
        public Result ok() {
            if (exitCode != 0) {
                throw new AssertionError(this.toString());
            }
            return this;
        }

        @Override
        public String toString() {
            return String.join(" ", argv) + " exited " + exitCode + "\n--- stdout\n" + stdout + "--- stderr\n" + stderr;
        }
    }

    private Command() {}

    public static Result run(Duration bound, Path dir, Map<String, String> env, List<String> argv)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(argv).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        if (dir != null) {
            pb.directory(dir.toFile());
        }
        pb.environment().putAll(env);
        Process p = pb.start();
        CompletableFuture<String> out = drain(p.getInputStream());
        CompletableFuture<String> err = drain(p.getErrorStream());
        if (!p.waitFor(bound.toMillis(), TimeUnit.MILLISECONDS)) {
            p.destroyForcibly().waitFor();
            throw new AssertionError(String.join(" ", argv) + " did not finish within " + bound
                    + "\n--- stdout\n" + out.join() + "--- stderr\n" + err.join());
        }
        return new Result(argv, p.exitValue(), out.join(), err.join());
    }

    public static CompletableFuture<String> drain(java.io.InputStream in) {
        CompletableFuture<String> f = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try (in) {
                f.complete(new String(in.readAllBytes(), StandardCharsets.UTF_8));
            } catch (IOException e) {
                f.complete("<read failed: " + e + ">");
            }
        });
        return f;
    }
}
