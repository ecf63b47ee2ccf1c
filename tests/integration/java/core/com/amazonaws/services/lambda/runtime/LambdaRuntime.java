package com.amazonaws.services.lambda.runtime;

public final class LambdaRuntime {
    private static volatile LambdaLogger logger;

    private LambdaRuntime() {}

    public static LambdaLogger getLogger() {
        return logger;
    }
}
