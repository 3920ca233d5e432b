// SPDX-License-Identifier: Apache-2.0
package dev.vantage.test;

import dev.vantage.Recorded;
import dev.vantage.Stats;
import dev.vantage.VantageAgent;
import dev.vantage.VantageException;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.management.ObjectName;

/**
 * The JVM binding on a real JVM against a real collector (run by tests/tests/ffi_jvm.rs):
 * {@code java dev.vantage.test.JvmTest MODE CONFIG DATA_DIR [ARGS]}. Each mode prints
 * {@code ok MODE key=value ...} on success and exits non-zero on the first failed check.
 *
 * <ul>
 *   <li>{@code consent-off}: nothing is kept, written or sent without consent;
 *   <li>{@code classify}: real exceptions (a refused connection, wrapped, from
 *       java.net.http.HttpClient, a read timeout) and an HTTP status reach the collector;
 *       close twice; every call after close throws CLOSED;
 *   <li>{@code bad-args}: bad input gets a VantageException naming what was wrong;
 *   <li>{@code threads N PER}: N threads record PER failures each; counts add up; threads
 *       racing close get CLOSED; the binding attached no Java thread, started no native thread
 *       beyond the library's {@code vantage-agent}, and holds no JNI global reference after close.
 * </ul>
 */
public final class JvmTest {
    private static final String SERVICE = "checkout";
    private static final InetAddress LOOPBACK = InetAddress.getLoopbackAddress();

    private JvmTest() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            throw new IllegalArgumentException("usage: JvmTest MODE CONFIG DATA_DIR [ARGS]");
        }
        String mode = args[0];
        Path config = Paths.get(args[1]);
        Path dataDir = Paths.get(args[2]);
        String result;
        switch (mode) {
            case "consent-off":
                result = consentOff(config, dataDir);
                break;
            case "classify":
                result = classify(config, dataDir);
                break;
            case "bad-args":
                result = badArgs(config, dataDir);
                break;
            case "threads":
                result = threads(config, dataDir, Integer.parseInt(args[3]), Integer.parseInt(args[4]));
                break;
            default:
                throw new IllegalArgumentException("unknown mode " + mode);
        }
        System.out.println("ok " + mode + (result.isEmpty() ? "" : " " + result));
    }

    // ------------------------------------------------------------------------------------------

    static String consentOff(Path config, Path dataDir) throws IOException {
        long records = 0;
        try (VantageAgent agent = VantageAgent.open(config, dataDir)) {
            ConnectException refused = refusedConnection();
            check(agent.record(SERVICE, "https://off.example.com/a", refused, 5) == Recorded.NOT_CONSENTED,
                    "record without consent");
            check(agent.recordHttpStatus(SERVICE, "https://off.example.com/b", 503, 5)
                    == Recorded.NOT_CONSENTED, "recordHttpStatus without consent");
            agent.recordSuccess(SERVICE, "https://off.example.com/c");
            records = agent.stats().recorded();
            check(records == 0, "recorded " + records + " without consent");
            // Consent granted and withdrawn again: the files made in between are deleted.
            agent.setConsent(true);
            check(Files.isDirectory(dataDir), "no data dir after the grant: " + dataDir);
            agent.setConsent(false);
            check(agent.record(SERVICE, "https://off.example.com/e", refused, 5) == Recorded.NOT_CONSENTED,
                    "record after withdrawal");
        }
        check(!Files.exists(dataDir), "the data dir exists after consent was withdrawn: " + dataDir);
        return "recorded=" + records;
    }

    static String classify(Path config, Path dataDir) throws Exception {
        VantageAgent agent = VantageAgent.open(config, dataDir);
        agent.setConsent(true);
        List<String> chains = new ArrayList<>();

        // A real refused connection: a loopback port that was just closed.
        ConnectException refused = refusedConnection();
        check(refused.getClass() == ConnectException.class, "got " + refused);
        accepted(agent.record(SERVICE, "https://refused.example.com/pay?card=4111", refused, 3));

        // The same exception under two wrappers, as an app's call layer throws it.
        Exception wrapped = new IllegalStateException("checkout failed",
                new IOException("request failed", refused));
        accepted(agent.record(SERVICE, "https://wrapped.example.com/pay", wrapped, 4));

        // java.net.http.HttpClient to the closed port: whatever chain the JDK builds.
        int closed = closedPort();
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        try {
            client.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + closed + "/")).build(),
                    HttpResponse.BodyHandlers.discarding());
            throw new AssertionError("HttpClient reached a closed port");
        } catch (IOException e) {
            chains.add("httpclient=" + String.join(">", chainOf(e)));
            accepted(agent.record(SERVICE, "https://httpclient.example.com/", e, 5));
        }

        // A real read timeout: a listening socket that never answers.
        try (ServerSocket silent = new ServerSocket(0, 1, LOOPBACK);
                Socket s = new Socket(LOOPBACK, silent.getLocalPort())) {
            s.setSoTimeout(100);
            try (InputStream in = s.getInputStream()) {
                in.read();
                throw new AssertionError("read returned");
            } catch (SocketTimeoutException e) {
                accepted(agent.record(SERVICE, "https://timeout.example.com/", e, 100));
            }
        }

        accepted(agent.recordHttpStatus(SERVICE, "https://http.example.com/", 503, 6));

        // Nothing known in the chain: the documented fallback.
        accepted(agent.record(SERVICE, "https://unknown.example.com/", new IllegalStateException("x"), 7));

        // A cause cycle (a -> b -> a) ends; the refused connection inside it is found.
        IOException a = new IOException("a");
        IOException b = new IOException("b", a);
        ConnectException c = new ConnectException("c");
        a.initCause(c);
        c.initCause(b);
        accepted(agent.record(SERVICE, "https://cycle.example.com/", a, 8));

        // Only the first 64 causes are read: a refused connection 99 levels down is not seen
        // (and the glue stays within JNI's local reference capacity, checked by -Xcheck:jni).
        Throwable deep = new ConnectException("root");
        for (int i = 0; i < 99; i++) {
            deep = new RuntimeException("level " + i, deep);
        }
        accepted(agent.record(SERVICE, "https://deep.example.com/", deep, 9));

        agent.recordSuccess(SERVICE, "https://api.example.com/");
        long undelivered = agent.flush(Duration.ofSeconds(20));
        check(undelivered == 0, undelivered + " envelope(s) undelivered after 20 s");
        Stats stats = agent.stats();
        check(stats.deliveredFailures() == 8, "delivered " + stats);

        agent.close();
        check(agent.isClosed(), "isClosed after close");
        agent.close(); // a no-op
        closedThrows(() -> agent.record(SERVICE, "https://after.example.com/", refused));
        closedThrows(() -> agent.recordHttpStatus(SERVICE, "https://after.example.com/", 500, 0));
        closedThrows(() -> agent.recordSuccess(SERVICE, "https://after.example.com/"));
        closedThrows(() -> agent.setConsent(true));
        closedThrows(() -> agent.flush(Duration.ZERO));
        closedThrows(agent::stats);
        return "delivered=" + stats.deliveredFailures() + " version=" + VantageAgent.libraryVersion()
                + " " + String.join(" ", chains);
    }

    static String badArgs(Path config, Path dataDir) throws IOException {
        String text = new String(Files.readAllBytes(config), StandardCharsets.UTF_8);
        VantageException e = expect(VantageException.Status.CONFIG, () -> VantageAgent.open("= nope", dataDir));
        check(e.getMessage().startsWith("config (TOML)"), e.getMessage());
        e = expect(VantageException.Status.CONFIG,
                () -> VantageAgent.open(text.replace("https://127.0.0.1", "http://127.0.0.1"), dataDir));
        check(e.getMessage().contains("collectors[0].url"), e.getMessage());
        e = expect(VantageException.Status.INVALID_ARGUMENT, () -> VantageAgent.open(text, null));
        check(e.getMessage().equals("dataDir is null"), e.getMessage());
        e = expect(VantageException.Status.INVALID_ARGUMENT, () -> VantageAgent.open((String) null, dataDir));
        check(e.getMessage().equals("config is null"), e.getMessage());

        try (VantageAgent agent = VantageAgent.open(text, dataDir)) {
            agent.setConsent(true);
            ConnectException refused = refusedConnection();
            e = expect(VantageException.Status.INVALID_ARGUMENT,
                    () -> agent.record(null, "https://x.example.com/", refused));
            check(e.getMessage().equals("service is null"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT, () -> agent.record(SERVICE, null, refused));
            check(e.getMessage().equals("url is null"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT,
                    () -> agent.record(SERVICE, "https://x.example.com/", null));
            check(e.getMessage().equals("error is null"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT,
                    () -> agent.record("Not A Service Id!", "https://x.example.com/", refused));
            check(e.getMessage().contains("service id"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT,
                    () -> agent.record(SERVICE, "not a url or host", refused));
            check(e.getMessage().contains("host"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT,
                    () -> agent.record(SERVICE, "https://x.example.com/", refused, -5));
            check(e.getMessage().contains("elapsedMs -5"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT,
                    () -> agent.recordHttpStatus(SERVICE, "https://x.example.com/", 200, 0));
            check(e.getMessage().contains("status 200"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT, () -> agent.flush(Duration.ofMillis(-1)));
            check(e.getMessage().contains("timeoutMs -1"), e.getMessage());
            e = expect(VantageException.Status.INVALID_ARGUMENT, () -> {
                agent.recordSuccess(SERVICE, null);
                return "no exception";
            });
            check(e.getMessage().equals("url is null"), e.getMessage());
            check(agent.stats().recorded() == 0, "a bad call was kept: " + agent.stats());
        }
        return "";
    }

    static String threads(Path config, Path dataDir, int n, int per) throws Exception {
        // The JDK's networking and management code take JNI global references of their own
        // on first use: used once before the baseline.
        ConnectException refused = refusedConnection();
        warmUpThreadDump();
        Set<Thread> javaBefore = javaThreads();
        Map<Integer, String> nativeBefore = nativeThreads();
        int refsBefore = jniGlobalRefs();

        VantageAgent agent = VantageAgent.open(config, dataDir);
        agent.setConsent(true);
        AtomicLong accepted = new AtomicLong();
        AtomicLong queueFull = new AtomicLong();
        AtomicReference<Throwable> failed = new AtomicReference<>();
        List<Thread> workers = new ArrayList<>();
        CountDownLatch start = new CountDownLatch(1);
        for (int i = 0; i < n; i++) {
            String url = "https://t" + i + ".example.com/pay";
            Thread t = new Thread(() -> {
                try {
                    start.await();
                    for (int k = 0; k < per; k++) {
                        Recorded r = agent.record(SERVICE, url, refused, k % 100);
                        (r == Recorded.ACCEPTED ? accepted : queueFull).incrementAndGet();
                        check(r != Recorded.NOT_CONSENTED, "not consented");
                        agent.recordSuccess(SERVICE, url);
                    }
                } catch (Throwable e) {
                    failed.compareAndSet(null, e);
                }
            }, "vantage-rec-" + i);
            t.start();
            workers.add(t);
        }
        start.countDown();
        for (Thread t : workers) {
            t.join();
        }
        if (failed.get() != null) {
            throw new AssertionError("a recording thread failed", failed.get());
        }
        long undelivered = agent.flush(Duration.ofSeconds(30));
        check(undelivered == 0, undelivered + " envelope(s) undelivered after 30 s");
        Stats stats = agent.stats();

        int refsOpen = jniGlobalRefs();
        check(refsOpen == refsBefore,
                "JNI global refs: " + refsBefore + " before open, " + refsOpen + " while open");

        // While open: no Java thread was added (the library's thread is never attached to the
        // JVM); every new native thread is the library's own.
        Set<Thread> javaOpen = javaThreads();
        javaOpen.removeAll(javaBefore);
        check(javaOpen.isEmpty(), "Java threads added while the agent is open: " + javaOpen);
        Map<Integer, String> added = nativeThreads();
        added.keySet().removeAll(nativeBefore.keySet());
        String addedWhileOpen = String.join(",", new TreeMap<>(countByName(added)).keySet());
        check(!added.isEmpty() && added.values().stream().allMatch(JvmTest::libraryOrJvmThread),
                "native threads added while open: " + added);

        // Threads recording while another closes: each ends with CLOSED, nothing else.
        List<Thread> racers = new ArrayList<>();
        CountDownLatch running = new CountDownLatch(n);
        List<Throwable> ends = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Thread t = new Thread(() -> {
                Throwable end = null;
                try {
                    boolean first = true;
                    while (true) {
                        agent.record(SERVICE, "https://race.example.com/", refused, 1);
                        if (first) {
                            running.countDown();
                            first = false;
                        }
                    }
                } catch (Throwable e) {
                    end = e;
                }
                synchronized (ends) {
                    ends.add(end);
                }
                running.countDown();
            }, "vantage-race-" + i);
            t.start();
            racers.add(t);
        }
        running.await();
        agent.close();
        agent.close();
        for (Thread t : racers) {
            t.join();
        }
        for (Throwable e : ends) {
            check(e instanceof VantageException
                    && ((VantageException) e).status() == VantageException.Status.CLOSED,
                    "a racing thread ended with " + e);
        }

        // After close: the library's threads are gone, the Java threads are as before, and
        // the JNI global references are as many as before open.
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        Map<Integer, String> left;
        do {
            left = nativeThreads();
            left.keySet().removeAll(nativeBefore.keySet());
            left.values().removeIf(name -> !name.startsWith("vantage-agent"));
        } while (!left.isEmpty() && System.nanoTime() < deadline && pause());
        check(left.isEmpty(), "library threads still running after close: " + left);
        Set<Thread> javaAfter = javaThreads();
        javaAfter.removeAll(javaBefore);
        javaAfter.removeAll(racers);
        javaAfter.removeAll(workers);
        check(javaAfter.isEmpty(), "Java threads left after close: " + javaAfter);
        int refsAfter = jniGlobalRefs();
        check(refsAfter == refsBefore,
                "JNI global refs: " + refsBefore + " before open, " + refsAfter + " after close");

        return "ok=" + accepted.get() + " queue_full=" + queueFull.get() + " recorded=" + stats.recorded()
                + " delivered=" + stats.deliveredFailures() + " dropped=" + stats.dropped()
                + " global_refs_before=" + refsBefore + " global_refs_open=" + refsOpen
                + " global_refs_after=" + refsAfter
                + " native_threads_added_while_open=" + added.size() + " (" + addedWhileOpen + ")";
    }

    // ------------------------------------------------------------------------------------------

    /** A port on loopback that was listening a moment ago and is now closed. */
    static int closedPort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, LOOPBACK)) {
            return s.getLocalPort();
        }
    }

    /** The exception of a real connect to a closed loopback port. */
    static ConnectException refusedConnection() throws IOException {
        int port = closedPort();
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(LOOPBACK, port), 5000);
            throw new AssertionError("connected to the closed port " + port);
        } catch (ConnectException e) {
            return e;
        }
    }

    static List<String> chainOf(Throwable e) {
        List<String> names = new ArrayList<>();
        Set<Throwable> seen = new HashSet<>();
        for (Throwable t = e; t != null && seen.add(t); t = t.getCause()) {
            names.add(t.getClass().getName());
        }
        return names;
    }

    /** Java threads, as the JVM lists them. */
    static Set<Thread> javaThreads() {
        return new HashSet<>(Thread.getAllStackTraces().keySet());
    }

    /** Native threads of this process: tid to name (/proc/self/task/TID/comm). */
    static Map<Integer, String> nativeThreads() throws IOException {
        Map<Integer, String> threads = new TreeMap<>();
        String[] tids = new File("/proc/self/task").list();
        for (String tid : tids == null ? new String[0] : tids) {
            try {
                String name = new String(Files.readAllBytes(Paths.get("/proc/self/task", tid, "comm")),
                        StandardCharsets.UTF_8).trim();
                threads.put(Integer.parseInt(tid), name);
            } catch (IOException gone) {
                // The thread ended between the listing and the read.
            }
        }
        return threads;
    }

    /**
     * The library's thread ({@code vantage-agent}: the tokio runtime of the C library) and the
     * JVM's own, which it starts on demand (JIT compiler threads; sled's I/O pool is the
     * library's too, named {@code sled-io}).
     */
    static boolean libraryOrJvmThread(String name) {
        return name.startsWith("vantage-agent") || name.startsWith("sled")
                || name.startsWith("C1 CompilerThre") || name.startsWith("C2 CompilerThre");
    }

    static Map<String, Integer> countByName(Map<Integer, String> threads) {
        Map<String, Integer> counts = new TreeMap<>();
        for (String name : threads.values()) {
            counts.merge(name, 1, Integer::sum);
        }
        return counts;
    }

    /** The JVM's count of JNI global references (the last line of a thread dump). */
    static int jniGlobalRefs() throws Exception {
        Object dump = ManagementFactory.getPlatformMBeanServer().invoke(
                new ObjectName("com.sun.management:type=DiagnosticCommand"), "threadPrint",
                new Object[] {new String[0]}, new String[] {String[].class.getName()});
        Matcher m = Pattern.compile("JNI global refs: (\\d+)").matcher((String) dump);
        check(m.find(), "no JNI global refs line in the thread dump");
        return Integer.parseInt(m.group(1));
    }

    /** The first thread dump loads the management classes (which take global refs). */
    static void warmUpThreadDump() throws Exception {
        jniGlobalRefs();
        jniGlobalRefs();
    }

    /** Yields for a moment between polls of a deadline loop. */
    static boolean pause() {
        try {
            Thread.sleep(20);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return true;
    }

    interface Call {
        Object run() throws Exception;
    }

    interface VoidCall {
        void run() throws Exception;
    }

    static VantageException expect(VantageException.Status status, Call call) {
        try {
            Object got = call.run();
            throw new AssertionError("expected " + status + ", got " + got);
        } catch (VantageException e) {
            check(e.status() == status, "expected " + status + ", got " + e.status() + ": " + e.getMessage());
            return e;
        } catch (Exception e) {
            throw new AssertionError("expected a VantageException " + status, e);
        }
    }

    static void closedThrows(VoidCall call) {
        VantageException e = expect(VantageException.Status.CLOSED, () -> {
            call.run();
            return "no exception";
        });
        check(e.getMessage().contains("closed"), e.getMessage());
    }

    static void accepted(Recorded r) {
        check(r == Recorded.ACCEPTED, "record: " + r);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }
}
