package com.amazonaws.services.lambda.runtime;

/**
 * What a handler learns about the invocation it runs and the function it belongs to.
 *
 * <p>Lamina's own copy of the aws-lambda-java-core interface (same package, names and
 * signatures, so code compiled against the library links to it). The runtime provides it from
 * the system class loader, as AWS's runtime does; a copy bundled in the function is shadowed.
 */
public interface Context {

    /** The invocation's request id (the one the caller got back). */
    String getAwsRequestId();

    /** The function's log group. */
    String getLogGroupName();

    /** The log stream of this execution environment. */
    String getLogStreamName();

    /** The function's name. */
    String getFunctionName();

    /** The version that runs ($LATEST or a number). */
    String getFunctionVersion();

    /** The ARN the caller invoked (with its qualifier, if it named one). */
    String getInvokedFunctionArn();

    /** The Amazon Cognito identity of a mobile caller, or null. */
    CognitoIdentity getIdentity();

    /** The mobile client's context, or null. */
    ClientContext getClientContext();

    /** Milliseconds left before the invocation times out. */
    int getRemainingTimeInMillis();

    /** The function's MemorySize. */
    int getMemoryLimitInMB();

    /** The logger that writes to the function's log stream. */
    LambdaLogger getLogger();

    /** The X-Ray trace header of this invocation, or null. */
    default String getXrayTraceId() {
        return null;
    }

    /** The tenant of a tenant-isolated invocation, or null. */
    default String getTenantId() {
        return null;
    }
}
