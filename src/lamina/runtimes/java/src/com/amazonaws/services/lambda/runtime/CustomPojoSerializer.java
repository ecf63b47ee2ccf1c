package com.amazonaws.services.lambda.runtime;

import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Type;

/**
 * A function's own JSON mapping for POJO handlers, found with java.util.ServiceLoader on the
 * function's class path (META-INF/services/com.amazonaws.services.lambda.runtime.CustomPojoSerializer).
 */
public interface CustomPojoSerializer {

    <T> T fromJson(InputStream input, Type type);

    <T> T fromJson(String input, Type type);

    <T> void toJson(T value, OutputStream output, Type type);
}
