// SPDX-License-Identifier: Apache-2.0
package dev.vantage;

/**
 * A call of the Vantage agent failed: {@link #status()} says how (the codes of the C library's
 * {@code vantage_status}), the message names the argument or config field that was wrong.
 * Unchecked, so Kotlin and Java callers handle it where they choose.
 */
public final class VantageException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** What went wrong: the negative {@code vantage_status} codes of {@code vantage.h}. */
    public enum Status {
        /** A null or invalid argument: an unknown service id, a bad status, a negative time. */
        INVALID_ARGUMENT(-1),
        /** The configuration did not parse or is invalid (the message names the field). */
        CONFIG(-2),
        /** A file in the data dir could not be written, read or deleted. */
        IO(-3),
        /** Consent is not granted (only from calls that need it). */
        NOT_CONSENTED(-4),
        /** A wait ran out of time. */
        TIMEOUT(-5),
        /** The agent is closed: {@link VantageAgent#close()} was called. */
        CLOSED(-6),
        /** A bug in the library; the panic was caught at the boundary. */
        PANIC(-7),
        /** The agent's queue was full (the failure was dropped and counted). */
        QUEUE_FULL(-8),
        /** A call for the other delivery mode. */
        WRONG_MODE(-9),
        /** A service id the config does not list (the message names it). */
        UNKNOWN_SERVICE(-10),
        /** A code this version of the binding does not know. */
        UNKNOWN(Integer.MIN_VALUE);

        private final int code;

        Status(int code) {
            this.code = code;
        }

        /** The C library's code ({@code VANTAGE_ERR_*}). */
        public int code() {
            return code;
        }

        static Status of(int code) {
            for (Status s : values()) {
                if (s.code == code) {
                    return s;
                }
            }
            return UNKNOWN;
        }
    }

    private final Status status;

    VantageException(Status status, String message) {
        super(message);
        this.status = status;
    }

    /** How the call failed. */
    public Status status() {
        return status;
    }
}
