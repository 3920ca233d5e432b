// SPDX-License-Identifier: Apache-2.0
package dev.vantage;

/** The agent's own accounting, as {@code vantage_stats}. */
public final class Stats {
    private final long[] v;

    Stats(long[] values) {
        this.v = values.clone();
    }

    /** Failures admitted by consent and sampling. */
    public long recorded() {
        return v[0];
    }

    /** Envelopes sealed and stored. */
    public long sealedEnvelopes() {
        return v[1];
    }

    /** Envelopes a collector accepted. */
    public long deliveredEnvelopes() {
        return v[2];
    }

    /** Failures in accepted envelopes. */
    public long deliveredFailures() {
        return v[3];
    }

    /** Failures dropped, all reasons together. */
    public long dropped() {
        return v[4];
    }

    /** Envelopes waiting for delivery or in flight. */
    public long queuedEnvelopes() {
        return v[5];
    }

    @Override
    public String toString() {
        return "Stats{recorded=" + v[0] + ", sealedEnvelopes=" + v[1] + ", deliveredEnvelopes="
                + v[2] + ", deliveredFailures=" + v[3] + ", dropped=" + v[4]
                + ", queuedEnvelopes=" + v[5] + "}";
    }
}
