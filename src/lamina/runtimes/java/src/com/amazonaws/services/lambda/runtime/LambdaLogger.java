package com.amazonaws.services.lambda.runtime;

import com.amazonaws.services.lambda.runtime.logging.LogLevel;

/** Writes records to the function's log stream, one log event per call. */
public interface LambdaLogger {

    /** Log a message (no level: never filtered out). */
    void log(String message);

    /** Log raw bytes (no level: never filtered out). */
    void log(byte[] message);

    /** Log a message at a level (dropped below AWS_LAMBDA_LOG_LEVEL in JSON format). */
    default void log(String message, LogLevel logLevel) {
        log(message);
    }

    /** Log raw bytes at a level. */
    default void log(byte[] message, LogLevel logLevel) {
        log(message);
    }
}
