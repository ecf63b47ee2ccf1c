package com.amazonaws.services.lambda.runtime;

import java.util.Map;

/** What a mobile caller sent about itself (the Client-Context of the invocation). */
public interface ClientContext {

    /** The calling application. */
    Client getClient();

    /** Values the application set for the function. */
    Map<String, String> getCustom();

    /** The caller's environment (platform, model, locale...). */
    Map<String, String> getEnvironment();
}
