package com.amazonaws.services.lambda.runtime;

/** The runtime's global logger, for code that has no Context at hand. */
public final class LambdaRuntime {

    // Set by the runtime once it has made its logger; until then, plain stdout.
    private static volatile LambdaLogger logger = new LambdaLogger() {
        public void log(String message) {
            System.out.print(message);
        }

        public void log(byte[] message) {
            System.out.write(message, 0, message.length);
        }
    };

    private LambdaRuntime() {}

    /** The logger that writes to the function's log stream. */
    public static LambdaLogger getLogger() {
        return logger;
    }
}
