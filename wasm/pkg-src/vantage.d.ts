// Types of vantage.js (the core's types, from wasm-bindgen, are in vantage_wasm.d.ts).

/** The config object of `Vantage.create`. */
export interface VantageConfig {
    /** Collector base URLs, in failover order (uploads go to `<url>/v1/envelopes`). */
    collectors: string[];
    /** The deployment's collector public key (64 hex digits). */
    collectorKey: string;
    /** The app's id (e.g. "com.example.shop"). */
    appId: string;
    /** The app's version. Default "0". */
    appVersion?: string;
    /** The platform label. Default "web". */
    platform?: string;
    /** Service id of reports that do not name one. Default "web". */
    service?: string;
    /** Byte budget of the IndexedDB buffer. Default 1 MiB. */
    maxBytes?: number;
    /** Oldest a buffered envelope may get, in ms. Default 7 days. */
    maxAgeMs?: number;
    /** Time a failure waits in memory before it is sealed. Default 500. */
    sealDelayMs?: number;
    /** Minimum time between scope checks (`/v1/ping`); 0 turns them off. Default 30000. */
    scopeCheckIntervalMs?: number;
    /** Delivery backoff after a failed upload. Defaults 1000 and 20000. */
    baseBackoffMs?: number;
    maxBackoffMs?: number;
    /** Fraction of failures reported. Default 1. */
    failureSampleRate?: number;
    /** Fraction of successes counted. Default 1 (counts cost the same bytes either way). */
    successSampleRate?: number;
    /** Timeout the fetch wrapper adds to page requests; 0 = none. Default 0. */
    fetchTimeoutMs?: number;
    /** Upload timeout. Default 10000. */
    uploadTimeoutMs?: number;
    /** Scope check timeout. Default 5000. */
    pingTimeoutMs?: number;
    /** IndexedDB database name. Default "vantage". */
    dbName?: string;
    /** Where the .wasm file is. Default: next to vantage_wasm.js. */
    wasmUrl?: string | URL;
}

/** A failed request the app reports itself. */
export interface FailureReport {
    url: string;
    /** A NEL type label ("tcp.refused", "http.error", ...). */
    type?: string;
    status?: number;
    elapsedMs?: number;
    protocol?: string;
    service?: string;
}

export type Recorded = 'kept' | 'not_consented' | 'not_sampled' | 'dropped' | 'invalid' | 'other';

/** The agent's accounting. */
export interface VantageStats {
    recorded: number;
    notSampled: number;
    sealedEnvelopes: number;
    deliveredEnvelopes: number;
    deliveredFailures: number;
    pendingFailures: number;
    queuedEnvelopes: number;
    storedEnvelopes: number;
    storedBytes: number;
    dropped: Record<string, number>;
}

/** Loads the wasm module once. */
export function load(wasmUrl?: string | URL): Promise<unknown>;
/** The wire protocol version. */
export function protocolVersion(): number;

export class Vantage extends EventTarget {
    static create(config: VantageConfig): Promise<Vantage>;
    readonly consented: boolean;
    /** The last storage error, else the last delivery failure (`deliveryError`), else null. */
    readonly lastError: unknown;
    /** The most recent failed delivery (`http.error`, `tcp.timed_out`, `unknown`), or null. */
    readonly deliveryError: { label: string; message: string } | null;
    setConsent(granted: boolean): Promise<void>;
    record(report: FailureReport): Recorded;
    recordSuccess(url: string, service?: string): void;
    instrumentFetch(options?: { timeoutMs?: number; service?: string }): () => void;
    flush(timeoutMs?: number): Promise<VantageStats>;
    stats(): VantageStats;
    storedEnvelopes(): Promise<number>;
}
