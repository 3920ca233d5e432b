// Vantage for web pages: the I/O around the wasm agent core (vantage_wasm.js, made by
// wasm-bindgen). The core classifies, coalesces, seals (HPKE + Ed25519) and schedules; this file
// stores envelopes in IndexedDB, sends them with fetch(keepalive), pings collectors for the
// scope, wraps window.fetch, and makes a last fetch(keepalive) attempt on pagehide (not
// sendBeacon: a beacon always carries credentials, and uploads never should).
//
// Nothing is stored or sent before consent: the IndexedDB database is not even created until
// setConsent(true), and withdrawal deletes it.
import init, { Core, protocolVersion } from './vantage_wasm.js';

const MEDIA_TYPE = 'application/vnd.vantage.envelope+cbor';
const DB_VERSION = 1;
const DEFAULT_DB_NAME = 'vantage';
// fetch(keepalive) bodies share a 64 KiB budget per page; larger envelopes go without keepalive.
const KEEPALIVE_MAX = 60000;
// What the pagehide attempt may send at most (the same per-page keepalive budget).
const PAGEHIDE_BUDGET = 60000;
// Sequence numbers are reserved this far ahead of use in IndexedDB: an envelope sealed (and
// sent) on pagehide may be sent although the write that records its number never
// completes, and the collector drops a reused number as a replay. A reload skips the rest.
const SEQ_RESERVE = 64;

let moduleReady = null;

/** Loads the wasm module once (from `wasmUrl`, default next to vantage_wasm.js). */
export function load(wasmUrl) {
    moduleReady ??= init(wasmUrl ? { module_or_path: wasmUrl } : undefined);
    return moduleReady;
}

export { protocolVersion };

function request(r) {
    return new Promise((resolve, reject) => {
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
    });
}

function completion(tx) {
    return new Promise((resolve, reject) => {
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error || new Error('IndexedDB transaction aborted'));
    });
}

async function dbExists(name) {
    // Without databases() there is no way to ask without creating: open, and delete again
    // below when no grant is found.
    if (typeof indexedDB.databases !== 'function') return true;
    return (await indexedDB.databases()).some((d) => d.name === name);
}

function openDb(name) {
    const r = indexedDB.open(name, DB_VERSION);
    r.onupgradeneeded = () => {
        r.result.createObjectStore('envelopes', { keyPath: 'seq' });
        r.result.createObjectStore('meta');
    };
    return request(r);
}

function deleteDb(name) {
    const r = indexedDB.deleteDatabase(name);
    return new Promise((resolve, reject) => {
        r.onsuccess = () => resolve();
        r.onerror = () => reject(r.error);
        // Another tab holds it open; it is deleted when that tab lets go.
        r.onblocked = () => resolve();
    });
}

function retryAfterMs(value) {
    if (!value) return 0;
    const secs = Number(value);
    if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
    const at = Date.parse(value);
    return Number.isFinite(at) ? Math.max(0, at - Date.now()) : 0;
}

function urlOf(input) {
    try {
        if (typeof input === 'string') return new URL(input, location.href).href;
        if (input instanceof URL) return input.href;
        if (input && typeof input.url === 'string') return input.url;
    } catch {
        // An unparsable URL: fetch itself rejects it; nothing to report.
    }
    return null;
}

function lastTiming(url, since) {
    if (typeof performance.getEntriesByName !== 'function') return null;
    const entries = performance.getEntriesByName(url, 'resource');
    for (let i = entries.length - 1; i >= 0; i--) {
        if (entries[i].startTime >= since - 1) return entries[i];
    }
    return null;
}

/**
 * The agent. Create with `await Vantage.create(config)`; see README.md for the config fields.
 * Events (an EventTarget): `stored` after each IndexedDB commit, `outcome` after each upload
 * answer (`detail`: {seq, status, resolution}).
 */
export class Vantage extends EventTarget {
    /** Loads the module, reads what IndexedDB holds (only if consent was given before). */
    static async create(config) {
        await load(config.wasmUrl);
        const v = new Vantage(config);
        await v.#start();
        return v;
    }

    #config;
    #core;
    #collectors;
    #service;
    #dbName;
    #db = null;
    #dbOpening = null;
    #io = Promise.resolve();
    #timer = null;
    #kickQueued = false;
    #abort = new AbortController();
    #fetch;
    #unwrap = null;
    #waiters = [];
    #lastError = null;

    constructor(config) {
        super();
        if (!config || !Array.isArray(config.collectors) || config.collectors.length === 0) {
            throw new Error('vantage: invalid config field `collectors`');
        }
        this.#config = config;
        this.#collectors = config.collectors.map((c) => String(c).replace(/\/+$/, ''));
        this.#service = config.service ?? 'web';
        this.#dbName = config.dbName ?? DEFAULT_DB_NAME;
        // Uploads and pings use the fetch of the moment of creation, never an instrumented one.
        this.#fetch = globalThis.fetch.bind(globalThis);
        this.#core = new Core(config);
    }

    async #start() {
        let restored = false;
        if (await dbExists(this.#dbName)) {
            const db = await openDb(this.#dbName);
            const tx = db.transaction(['envelopes', 'meta'], 'readonly');
            const meta = tx.objectStore('meta');
            const [identity, nextSeq, envelopes] = await Promise.all([
                request(meta.get('identity')),
                request(meta.get('nextSeq')),
                request(tx.objectStore('envelopes').getAll()),
            ]);
            if (identity) {
                for (const e of envelopes) {
                    this.#core.loadEnvelope(e.seq, e.createdAt, e.failures, e.bytes);
                }
                this.#core.finishLoad(nextSeq || 1);
                this.#core.restoreConsent(identity.secret, identity.since);
                this.#db = db;
                restored = true;
            } else {
                // Leftovers without a grant (a withdrawal cut short): finish deleting them.
                db.close();
                await deleteDb(this.#dbName);
            }
        }
        if (!restored) this.#core.finishLoad(1);
        if (typeof addEventListener === 'function') {
            addEventListener('pagehide', () => this.#pageHide());
            addEventListener('online', () => this.#kick());
        }
        this.#kick();
    }

    /** True while the user's consent is granted. */
    get consented() {
        return this.#core.isGranted();
    }

    /**
     * The last storage error, if any (the envelopes stay in memory and are still sent); else
     * the last delivery failure as `{ label, message }` (`label`: `tcp.timed_out`,
     * `http.error`, `unknown`, ...), or null when no collector's last attempt failed.
     */
    get lastError() {
        return this.#lastError ?? this.deliveryError;
    }

    /**
     * The most recent delivery failure among the collectors whose last attempt failed, as
     * `{ label, message }`, or null. Browsers do not say why a `fetch` failed, so network
     * failures are `unknown` (with the browser's words) or `tcp.timed_out`.
     */
    get deliveryError() {
        const label = this.#core.deliveryErrorLabel();
        return label === undefined ? null : { label, message: this.#core.deliveryErrorMessage() };
    }

    /**
     * Grants (true) or withdraws (false) consent. Granting creates the database and a new
     * identity; withdrawing cancels uploads, deletes everything collected and the database.
     */
    async setConsent(granted) {
        const now = Date.now();
        if (granted) {
            const secret = this.#core.grant(now);
            if (secret) {
                const db = await this.#openDb();
                const tx = db.transaction(['meta'], 'readwrite');
                tx.objectStore('meta').put({ secret, since: now }, 'identity');
                tx.objectStore('meta').put(this.#core.nextSeq() + SEQ_RESERVE, 'nextSeq');
                await completion(tx);
            }
            this.#kick();
            return;
        }
        this.#abort.abort();
        this.#abort = new AbortController();
        this.#core.withdraw(now);
        this.#core.takeJournal();
        clearTimeout(this.#timer);
        await this.#io.catch(() => {});
        await this.#dbOpening?.catch(() => {});
        this.#db?.close();
        this.#db = null;
        this.#dbOpening = null;
        await deleteDb(this.#dbName);
    }

    /**
     * Records a failed request: `{url, type?, status?, elapsedMs?, protocol?, service?}`. `type`
     * is a NEL label (`tcp.refused`, `http.error`, ...; default `http.error` with a status,
     * else `unknown`). A relative URL is resolved against the page. Only the URL's host is kept. Returns "kept", "not_consented",
     * "not_sampled", "dropped" or "invalid".
     */
    record(report) {
        const status = report.status ?? 0;
        const type = report.type ?? (status ? 'http.error' : 'unknown');
        const r = this.#core.record(
            report.service ?? this.#service,
            urlOf(String(report.url)) ?? String(report.url),
            type,
            status,
            report.elapsedMs ?? 0,
            report.protocol ?? '',
            Date.now(),
        );
        if (r === 'kept') this.#kick();
        return r;
    }

    /** Counts a successful request to `url` (sampled by `successSampleRate`). */
    recordSuccess(url, service) {
        this.#core.recordSuccess(service ?? this.#service, urlOf(String(url)) ?? String(url), Date.now());
    }

    /**
     * Wraps window.fetch: network errors, timeouts (`timeoutMs`, default config.fetchTimeoutMs,
     * 0 = none), aborts and HTTP error statuses become reports. Requests to the collectors are
     * left alone. Returns a function that unwraps.
     */
    instrumentFetch(options = {}) {
        if (this.#unwrap) return this.#unwrap;
        const original = globalThis.fetch;
        const timeoutMs = options.timeoutMs ?? this.#config.fetchTimeoutMs ?? 0;
        const service = options.service ?? this.#service;
        const agent = this;
        const wrapped = async function fetch(input, init) {
            const url = urlOf(input);
            if (!url || agent.#isCollector(url)) return original.call(globalThis, input, init);
            let options = init;
            if (timeoutMs > 0) {
                const own = init?.signal ?? (input instanceof Request ? input.signal : undefined);
                const timeout = AbortSignal.timeout(timeoutMs);
                options = { ...init, signal: own ? AbortSignal.any([own, timeout]) : timeout };
            }
            const started = performance.now();
            let response;
            try {
                response = await original.call(globalThis, input, options);
            } catch (e) {
                const name = e && e.name;
                const kind = name === 'TimeoutError' ? 'timeout' : name === 'AbortError' ? 'abort' : 'network';
                agent.#fetchFailed(service, url, kind, 0, started);
                throw e;
            }
            if (response.status >= 400) {
                agent.#fetchFailed(service, url, 'http', response.status, started);
            } else if (response.type !== 'opaque') {
                agent.recordSuccess(url, service);
            }
            return response;
        };
        globalThis.fetch = wrapped;
        this.#unwrap = () => {
            if (globalThis.fetch === wrapped) globalThis.fetch = original;
            this.#unwrap = null;
        };
        return this.#unwrap;
    }

    /**
     * Seals what is pending, stores it and tries to deliver everything stored, waiting at most
     * `timeoutMs` (default 5000). Resolves with the stats (see `stats()`).
     */
    async flush(timeoutMs = 5000) {
        const deadline = Date.now() + timeoutMs;
        // Give a scope check in flight a moment, so the reports carry path/local.
        const scopeDeadline = Math.min(deadline, Date.now() + 2000);
        while (this.#core.scopePending() && Date.now() < scopeDeadline) {
            this.#tick();
            await this.#changed(Math.max(1, Math.min(200, scopeDeadline - Date.now())));
        }
        if (this.#core.isGranted()) {
            this.#core.sealPending(Date.now());
            this.#tick();
        }
        while (Date.now() < deadline && this.#core.isGranted()) {
            const s = this.#core.stats();
            if (s.queuedEnvelopes === 0 && s.pendingFailures === 0 && !this.#core.hasJournal()) break;
            await this.#changed(Math.max(1, deadline - Date.now()));
        }
        await this.#io.catch(() => {});
        return this.stats();
    }

    /** The agent's accounting (recorded, sealedEnvelopes, deliveredEnvelopes, dropped, ...). */
    stats() {
        return this.#core.stats();
    }

    /** The number of envelopes IndexedDB holds right now (0 when there is no database). */
    async storedEnvelopes() {
        await this.#io.catch(() => {});
        if (!this.#db) return 0;
        return request(this.#db.transaction(['envelopes'], 'readonly').objectStore('envelopes').count());
    }

    #isCollector(url) {
        return this.#collectors.some((c) => url === c || url.startsWith(c + '/'));
    }

    #fetchFailed(service, url, kind, status, started) {
        const elapsed = performance.now() - started;
        const t = lastTiming(url, started);
        const type = Core.classifyFetch(kind, status, t ? t.connectEnd : 0, t ? t.responseStart : 0);
        this.record({
            service,
            url,
            type,
            status,
            elapsedMs: Math.round(t && t.duration > 0 ? t.duration : elapsed),
            protocol: (t && t.nextHopProtocol) || '',
        });
    }

    #openDb() {
        if (this.#db) return Promise.resolve(this.#db);
        this.#dbOpening ??= openDb(this.#dbName).then((db) => {
            this.#db = db;
            return db;
        });
        return this.#dbOpening;
    }

    #kick() {
        if (this.#kickQueued) return;
        this.#kickQueued = true;
        queueMicrotask(() => {
            this.#kickQueued = false;
            this.#tick();
        });
    }

    #tick() {
        const core = this.#core;
        const now = Date.now();
        try {
            core.pollSeal(now);
        } catch (e) {
            this.#lastError = e;
        }
        if (core.pollScopeCheck(now)) this.#scopeCheck();
        let t;
        while ((t = core.pollTransmit(now))) this.#send(t);
        this.#persist();
        clearTimeout(this.#timer);
        const at = core.pollTimeout();
        if (at !== undefined) this.#timer = setTimeout(() => this.#tick(), Math.max(0, at - Date.now()));
    }

    // Writes the core's journal to IndexedDB, in order, one transaction per batch of changes.
    #persist() {
        if (!this.#core.hasJournal() || !this.#core.isGranted()) return;
        const ops = this.#core.takeJournal();
        const nextSeq = this.#core.nextSeq() + SEQ_RESERVE;
        this.#io = this.#io
            .then(async () => {
                const db = await this.#openDb();
                const tx = db.transaction(['envelopes', 'meta'], 'readwrite');
                const store = tx.objectStore('envelopes');
                for (const op of ops) {
                    if (op.op === 'put') {
                        store.put({ seq: op.seq, createdAt: op.createdAt, failures: op.failures, bytes: op.bytes });
                    } else if (op.op === 'remove') {
                        store.delete(op.seq);
                    } else {
                        store.clear();
                    }
                }
                tx.objectStore('meta').put(nextSeq, 'nextSeq');
                await completion(tx);
                this.dispatchEvent(new CustomEvent('stored', { detail: { ops: ops.length } }));
                this.#notify();
            })
            .catch((e) => {
                this.#lastError = e;
            });
    }

    async #send(t) {
        const { id, seq, collector } = t;
        const body = t.bytes;
        t.free();
        const signal = this.#abort.signal;
        const timeoutMs = this.#config.uploadTimeoutMs ?? 10000;
        let status = 0;
        let retry = 0;
        let error;
        try {
            const r = await this.#fetch(this.#collectors[collector] + '/v1/envelopes', {
                method: 'POST',
                body,
                headers: { 'content-type': MEDIA_TYPE, 'vantage-sent-at': String(Date.now()) },
                keepalive: body.length <= KEEPALIVE_MAX,
                mode: 'cors',
                credentials: 'omit',
                cache: 'no-store',
                signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
            });
            status = r.status;
            retry = retryAfterMs(r.headers.get('retry-after'));
        } catch (e) {
            status = 0;
            error = e && e.name === 'TimeoutError' ? 'timeout' : String((e && e.message) || e);
        }
        // Withdrawn meanwhile: the core has forgotten this transmit and must not hear of it.
        if (signal.aborted) return;
        const resolution = this.#core.handleOutcome(id, status, retry, Date.now(), error);
        const cause = resolution === 'delivered' ? null : this.#core.deliveryErrorLabel() ?? null;
        this.dispatchEvent(new CustomEvent('outcome', { detail: { seq, status, resolution, error: cause } }));
        this.#notify();
        this.#kick();
    }

    async #scopeCheck() {
        let reachable = false;
        for (const base of this.#collectors.slice(0, 2)) {
            try {
                // no-cors: any answer at all (even opaque) means the collector is reachable.
                await this.#fetch(base + '/v1/ping', {
                    mode: 'no-cors',
                    credentials: 'omit',
                    cache: 'no-store',
                    signal: AbortSignal.timeout(this.#config.pingTimeoutMs ?? 5000),
                });
                reachable = true;
                break;
            } catch {
                // Try the next collector.
            }
        }
        this.#core.handleScopeResult(reachable, Date.now());
        this.#notify();
        this.#kick();
    }

    // The last chance: seal what is pending and send every stored envelope to the first
    // collector with fetch(keepalive), which outlives the page, without credentials. They stay
    // in IndexedDB (the answer is never seen); the collector answers a re-send of a delivered
    // envelope as a duplicate.
    #pageHide() {
        if (!this.#core.isGranted()) return;
        try {
            this.#core.sealPending(Date.now());
        } catch (e) {
            this.#lastError = e;
        }
        this.#persist();
        let budget = PAGEHIDE_BUDGET;
        const url = this.#collectors[0] + '/v1/envelopes';
        for (const bytes of this.#core.envelopes()) {
            if (bytes.length > budget) break;
            try {
                this.#fetch(url, {
                    method: 'POST',
                    body: bytes,
                    headers: { 'content-type': MEDIA_TYPE, 'vantage-sent-at': String(Date.now()) },
                    keepalive: true,
                    mode: 'cors',
                    credentials: 'omit',
                    cache: 'no-store',
                }).catch(() => {});
            } catch {
                break;
            }
            budget -= bytes.length;
        }
    }

    #notify() {
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters) w();
    }

    #changed(ms) {
        return new Promise((resolve) => {
            const timer = setTimeout(resolve, ms);
            this.#waiters.push(() => {
                clearTimeout(timer);
                resolve();
            });
        });
    }
}
