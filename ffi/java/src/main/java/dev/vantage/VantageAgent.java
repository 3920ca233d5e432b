// SPDX-License-Identifier: Apache-2.0
package dev.vantage;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * The Vantage agent for the JVM and Android: records failed network requests of the app's
 * services and delivers them, sealed, to the configured collectors. A thin binding over
 * libvantage (the C library with its JNI glue, {@code ffi/src/jvm.rs}).
 *
 * <pre>{@code
 * try (VantageAgent agent = VantageAgent.open(configFile, dataDir)) {
 *     agent.setConsent(true);                                  // after the user opted in
 *     try { call(); } catch (IOException e) { agent.record("checkout", url, e); }
 * }
 * }</pre>
 *
 * <p>Threads: every method may be called from any thread at once. Recording never blocks on
 * I/O; {@link #setConsent} writes or deletes a few small files; {@link #flush} and {@link #close}
 * wait. The binding starts no thread and attaches none to the JVM; the library runs one
 * native thread of its own ({@code vantage-agent}) while the agent is open, and never calls
 * into Java. It holds no JNI global reference.
 *
 * <p>Consent: nothing is written under the data dir, and nothing is sent, before
 * {@code setConsent(true)}; withdrawing deletes what was kept.
 *
 * <p>Close it ({@code try}-with-resources, Kotlin {@code use}): there is no finalizer. A second
 * {@link #close()} does nothing; any other call after close throws a {@link VantageException}
 * with status {@link VantageException.Status#CLOSED}.
 */
public final class VantageAgent implements AutoCloseable {
    /** How many causes of a {@code Throwable} are looked at (as the classifier does). */
    static final int MAX_CHAIN = 64;

    /** Read: any call using the handle; write: {@link #close()}, which frees it. */
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    /** The native handle; 0 once closed. Guarded by {@link #lock}. */
    private long handle;

    private VantageAgent(long handle) {
        this.handle = handle;
    }

    /**
     * Opens an agent with the config file's text (the native agent's TOML schema, or the
     * equivalent JSON object) and its files under {@code dataDir}, which replaces any
     * {@code data_dir} in the config. A consent granted in an earlier run is restored.
     *
     * @throws IOException when the config file cannot be read
     * @throws VantageException when the config is invalid ({@link VantageException.Status#CONFIG},
     *     the message names the field) or the agent cannot start
     */
    public static VantageAgent open(Path configFile, Path dataDir) throws IOException {
        String text = new String(Files.readAllBytes(configFile), StandardCharsets.UTF_8);
        return open(text, dataDir);
    }

    /**
     * Opens an agent from config text (TOML, or JSON starting with <code>{</code>; for example
     * read from Android assets), as {@link #open(Path, Path)}.
     *
     * @throws VantageException when the config is invalid or the agent cannot start
     */
    public static VantageAgent open(String config, Path dataDir) {
        long[] out = new long[1];
        check(Native.open(config, dataDir == null ? null : dataDir.toString(), out));
        return new VantageAgent(out[0]);
    }

    /** The version of the native library. */
    public static String libraryVersion() {
        return Native.version();
    }

    /**
     * Grants ({@code true}) or withdraws ({@code false}) the user's consent, synchronously.
     * Granting creates the data dir, a new identity key and the buffer; withdrawing deletes
     * them and forgets what was pending.
     */
    public void setConsent(boolean granted) {
        lock.readLock().lock();
        try {
            check(Native.setConsent(live(), granted));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** {@link #record(String, String, Throwable, long)} with an unknown duration (0). */
    public Recorded record(String service, String url, Throwable error) {
        return record(service, url, error, 0);
    }

    /**
     * Records a failed request of {@code service} to {@code url} (only its host is kept), from
     * the exception the HTTP stack threw. The exception and its causes ({@code getCause()}) are
     * classified by class name and the most specific known one wins, so a
     * {@code java.net.ConnectException} wrapped in an {@code IOException} is {@code tcp.refused},
     * an {@code UnknownHostException} {@code dns.name_not_resolved}, a
     * {@code SocketTimeoutException} {@code tcp.timed_out}. Never blocks on I/O.
     *
     * @param elapsedMillis from the start of the request to the failure
     * @return what became of it (without consent: {@link Recorded#NOT_CONSENTED})
     * @throws VantageException for a null argument, a service id or host that is not valid, a
     *     negative time ({@link VantageException.Status#INVALID_ARGUMENT}), or after close
     */
    public Recorded record(String service, String url, Throwable error, long elapsedMillis) {
        if (error == null) {
            throw new VantageException(VantageException.Status.INVALID_ARGUMENT, "error is null");
        }
        String[] chain = causeChain(error);
        lock.readLock().lock();
        try {
            return recorded(Native.recordThrowable(live(), service, url, chain, millis(elapsedMillis)));
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Records an HTTP response that counts as a failure ({@code status} 400 to 599) as
     * {@code http.error}, with its status.
     *
     * @throws VantageException as {@link #record(String, String, Throwable, long)}, or for a
     *     status outside 400..599
     */
    public Recorded recordHttpStatus(String service, String url, int status, long elapsedMillis) {
        lock.readLock().lock();
        try {
            return recorded(
                    Native.recordHttpStatus(live(), service, url, status, millis(elapsedMillis)));
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Counts a successful request, for failure ratios (sampled with the config's
     * {@code success_fraction}, default 0: off). Never blocks; ignored without consent.
     */
    public void recordSuccess(String service, String url) {
        lock.readLock().lock();
        try {
            check(Native.countSuccess(live(), service, url));
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Seals everything recorded so far and writes it to disk (always waited for), then waits
     * up to {@code timeout} for delivery.
     *
     * @return how many envelopes are still undelivered (0: all delivered); they stay on disk
     *     and are delivered later
     */
    public long flush(Duration timeout) {
        long ms = timeout.toMillis();
        long[] undelivered = new long[1];
        lock.readLock().lock();
        try {
            int status = Native.flush(live(), ms > Integer.MAX_VALUE ? Integer.MAX_VALUE : (int) ms,
                    undelivered);
            if (status != VantageException.Status.TIMEOUT.code()) {
                check(status);
            }
            return undelivered[0];
        } finally {
            lock.readLock().unlock();
        }
    }

    /** The agent's accounting. */
    public Stats stats() {
        long[] out = new long[6];
        lock.readLock().lock();
        try {
            check(Native.stats(live(), out));
        } finally {
            lock.readLock().unlock();
        }
        return new Stats(out);
    }

    /** Whether {@link #close()} has been called. */
    public boolean isClosed() {
        lock.readLock().lock();
        try {
            return handle == 0;
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Shuts the agent down: seals what is pending to disk (delivered at the next start), stops
     * the library's thread and frees the native agent. Waits for calls in progress on other
     * threads (a {@link #flush} up to its timeout), then at most about 10 s. A second call does
     * nothing.
     */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (handle != 0) {
                long h = handle;
                handle = 0;
                Native.free(h);
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * The class names of {@code error} and its causes, outermost first: at most
     * {@link #MAX_CHAIN}, and a cause seen before (a cycle) ends the chain.
     */
    static String[] causeChain(Throwable error) {
        Set<Throwable> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        List<String> names = new ArrayList<>();
        for (Throwable t = error; t != null && names.size() < MAX_CHAIN && seen.add(t);
                t = t.getCause()) {
            names.add(t.getClass().getName());
        }
        return names.toArray(new String[0]);
    }

    /** The handle; throws when closed. Called with the read lock held. */
    private long live() {
        if (handle == 0) {
            throw new VantageException(
                    VantageException.Status.CLOSED, "the VantageAgent is closed (close() was called)");
        }
        return handle;
    }

    private static int millis(long ms) {
        return ms > Integer.MAX_VALUE ? Integer.MAX_VALUE : ms < Integer.MIN_VALUE ? -1 : (int) ms;
    }

    private static Recorded recorded(int status) {
        if (status == VantageException.Status.NOT_CONSENTED.code()) {
            return Recorded.NOT_CONSENTED;
        }
        if (status == VantageException.Status.QUEUE_FULL.code()) {
            return Recorded.DROPPED_QUEUE_FULL;
        }
        check(status);
        return Recorded.ACCEPTED;
    }

    /** Throws for a negative status, with the library's message for this thread. */
    private static void check(int status) {
        if (status >= 0) {
            return;
        }
        String message = Native.lastError();
        VantageException.Status s = VantageException.Status.of(status);
        throw new VantageException(s, message != null ? message : "vantage: status " + status);
    }
}
