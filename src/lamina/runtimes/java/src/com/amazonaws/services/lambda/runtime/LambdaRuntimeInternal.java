package com.amazonaws.services.lambda.runtime;

/** A switch some logging adapters flip; Lamina's runtime keeps it and ignores it. */
public final class LambdaRuntimeInternal {

    private static volatile boolean useLog4jAppender;

    private LambdaRuntimeInternal() {}

    public static void setUseLog4jAppender(boolean value) {
        useLog4jAppender = value;
    }

    public static boolean getUseLog4jAppender() {
        return useLog4jAppender;
    }
}
