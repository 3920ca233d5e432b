// SPDX-License-Identifier: Apache-2.0
package dev.vantage;

/** What became of one recorded failure. Every failure ends in exactly one of these. */
public enum Recorded {
    /** Handed to the agent: sealed and stored within about a second (or left out by sampling). */
    ACCEPTED,
    /** Consent is not granted: nothing was kept. */
    NOT_CONSENTED,
    /** The agent's queue was full: dropped, and counted in {@link Stats#dropped()}. */
    DROPPED_QUEUE_FULL,
}
