package com.amazonaws.services.lambda.runtime;

// The test functions' stand-in for aws-lambda-java-core (unreachable from here): the same
// names and signatures, written for Lamina's tests.
public interface Context {
    String getAwsRequestId();

    String getLogGroupName();

    String getLogStreamName();

    String getFunctionName();

    String getFunctionVersion();

    String getInvokedFunctionArn();

    CognitoIdentity getIdentity();

    ClientContext getClientContext();

    int getRemainingTimeInMillis();

    int getMemoryLimitInMB();

    LambdaLogger getLogger();
}
