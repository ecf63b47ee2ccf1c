package com.amazonaws.services.lambda.runtime;

/**
 * A handler whose event is deserialized from JSON into {@code I} and whose result of type
 * {@code O} is serialized back to JSON.
 */
public interface RequestHandler<I, O> {

    /** Handle one event. */
    O handleRequest(I input, Context context);
}
