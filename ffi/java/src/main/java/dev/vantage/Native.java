// SPDX-License-Identifier: Apache-2.0
package dev.vantage;

/**
 * The native methods of libvantage's JNI glue ({@code ffi/src/jvm.rs}, cargo feature {@code jni}).
 * Each returns a status code of {@code vantage.h} (0 ok, negative an error; {@link #lastError()}
 * then says why, on the same thread). Only {@link VantageAgent} calls these, under its lock.
 */
final class Native {
    /**
     * The system property naming the library file to load ({@code System.load}); when unset,
     * {@code System.loadLibrary("vantage")} finds {@code libvantage.so} on the library path
     * (on Android: in the APK's {@code lib/<abi>/}).
     */
    static final String LIBRARY_PROPERTY = "vantage.library";

    static {
        String path = System.getProperty(LIBRARY_PROPERTY);
        if (path != null && !path.isEmpty()) {
            System.load(path);
        } else {
            System.loadLibrary("vantage");
        }
    }

    private Native() {}

    static native int open(String config, String dataDir, long[] out);

    static native void free(long handle);

    static native int setConsent(long handle, boolean granted);

    static native int recordThrowable(
            long handle, String service, String url, String[] causeChain, int elapsedMs);

    static native int recordHttpStatus(
            long handle, String service, String url, int status, int elapsedMs);

    static native int countSuccess(long handle, String service, String url);

    static native int flush(long handle, int timeoutMs, long[] undelivered);

    static native int stats(long handle, long[] out);

    static native String lastError();

    static native String version();
}
