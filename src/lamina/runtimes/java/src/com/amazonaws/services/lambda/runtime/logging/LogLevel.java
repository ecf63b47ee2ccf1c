package com.amazonaws.services.lambda.runtime.logging;

/** Log levels, from least to most severe; UNDEFINED is never filtered out. */
public enum LogLevel {
    UNDEFINED,
    TRACE,
    DEBUG,
    INFO,
    WARN,
    ERROR,
    FATAL;

    /** The level named (any case); IllegalArgumentException for an unknown name. */
    public static LogLevel fromString(String name) {
        try {
            return LogLevel.valueOf(name.toUpperCase(java.util.Locale.ROOT));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("Invalid log level: '" + name
                    + "' expected one of [TRACE, DEBUG, INFO, WARN, ERROR, FATAL]");
        }
    }
}
