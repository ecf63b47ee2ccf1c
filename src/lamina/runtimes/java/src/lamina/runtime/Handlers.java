package lamina.runtime;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.CustomPojoSerializer;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.ServiceLoader;

/**
 * Turns the function's handler string into something that runs one invocation, with the
 * rules of AWS's Java runtime: {@code package.Class} implementing RequestStreamHandler or
 * RequestHandler, or {@code package.Class::method} with one of the signatures Lambda accepts
 * (overloads sorted longest first, a trailing Context counting one more).
 */
final class Handlers {

    /** Runs one invocation: the raw event in, the raw response written to {@code output}. */
    interface Handler {
        void handle(byte[] input, ByteArrayOutputStream output, Context context) throws Throwable;
    }

    /** A handler made of a POJO method: the decoded input in, the result out. */
    private interface PojoCall {
        Object call(Object input, Context context) throws Throwable;
    }

    private static final byte[] NULL = "null".getBytes(StandardCharsets.UTF_8);

    private Handlers() {}

    /**
     * The handler {@code spec} names, loaded with {@code loader}. Throws a fatal Fault for a
     * problem that is an init error on Lambda (the class's static initializer or constructor
     * failed); other problems give a handler that fails every invocation.
     */
    static Handler load(String spec, ClassLoader loader) {
        if (spec == null) {
            spec = "";
        }
        int colon = spec.lastIndexOf("::");
        String className = colon < 0 ? spec : spec.substring(0, colon);
        String methodName = colon < 0 ? null : spec.substring(colon + 2);
        if (className.isEmpty() || (methodName != null && methodName.isEmpty())) {
            return failing(Fault.message("Invalid handler: `" + spec + "'"));
        }
        Class<?> c;
        try {
            c = Class.forName(className, true, loader);
        } catch (ClassNotFoundException e) {
            return failing(new Fault("Class not found: " + className, e.getClass().getName(),
                    Fault.trace(e), false));
        } catch (NoClassDefFoundError e) {
            return failing(loadingError(e, className));
        } catch (Throwable t) {
            throw loadingError(t, className);
        }
        Serializer serializer = Serializer.find(loader);
        try {
            return methodName == null ? classHandler(c, serializer) : methodHandler(c, methodName, serializer);
        } catch (Fault f) {
            if (f.fatal) {
                throw f;
            }
            return failing(f);
        }
    }

    private static Fault loadingError(Throwable t, String className) {
        String detail = t.getMessage() == null ? "" : ": " + t.getMessage();
        return new Fault("Error loading class " + className + detail, t.getClass().getName(),
                Fault.trace(t), true);
    }

    private static Handler failing(final Fault fault) {
        return new Handler() {
            public void handle(byte[] input, ByteArrayOutputStream output, Context context) {
                throw fault;
            }
        };
    }

    // -- package.Class ---------------------------------------------------------------------

    @SuppressWarnings({"rawtypes", "unchecked"})
    private static Handler classHandler(Class<?> c, Serializer serializer) {
        if (RequestStreamHandler.class.isAssignableFrom(c)) {
            final RequestStreamHandler h = (RequestStreamHandler) construct(c);
            return new Handler() {
                public void handle(byte[] input, ByteArrayOutputStream output, Context context)
                        throws Throwable {
                    h.handleRequest(new ByteArrayInputStream(input), output, context);
                }
            };
        }
        if (!RequestHandler.class.isAssignableFrom(c)) {
            throw Fault.message("Class does not implement an appropriate handler interface: " + c.getName());
        }
        Type[] types = typeArguments(c, RequestHandler.class);
        if (types == null || types.length != 2) {
            throw Fault.message("Class " + c.getName()
                    + " does not implement RequestHandler with concrete type parameters");
        }
        for (Type t : types) {
            if (t instanceof TypeVariable && ((TypeVariable<?>) t).getBounds()[0] == Object.class) {
                throw Fault.message("Class " + c.getName()
                        + " does not implement RequestHandler with concrete type parameters: parameter "
                        + t + " has no upper bound.");
            }
        }
        final RequestHandler h = (RequestHandler) construct(c);
        return pojo(new PojoCall() {
            public Object call(Object input, Context context) {
                return h.handleRequest(input, context);
            }
        }, types[0], types[1], serializer);
    }

    /** The type arguments {@code c} gives {@code iface}, type variables resolved on the way. */
    private static Type[] typeArguments(Class<?> c, Class<?> iface) {
        return find(c, iface, new HashMap<TypeVariable<?>, Type>());
    }

    private static Type[] find(Type t, Class<?> iface, Map<TypeVariable<?>, Type> outer) {
        Class<?> raw;
        Map<TypeVariable<?>, Type> bindings = new HashMap<TypeVariable<?>, Type>();
        Type[] args = null;
        if (t instanceof ParameterizedType) {
            ParameterizedType p = (ParameterizedType) t;
            raw = (Class<?>) p.getRawType();
            args = p.getActualTypeArguments().clone();
            TypeVariable<?>[] vars = raw.getTypeParameters();
            for (int i = 0; i < args.length; i++) {
                Type a = args[i];
                if (a instanceof TypeVariable && outer.containsKey(a)) {
                    args[i] = outer.get(a);
                }
                if (i < vars.length) {
                    bindings.put(vars[i], args[i]);
                }
            }
        } else if (t instanceof Class) {
            raw = (Class<?>) t;
        } else {
            return null;
        }
        if (raw == iface) {
            return args;
        }
        for (Type gi : raw.getGenericInterfaces()) {
            Type[] found = find(gi, iface, bindings);
            if (found != null) {
                return found;
            }
        }
        Type sup = raw.getGenericSuperclass();
        return sup == null ? null : find(sup, iface, bindings);
    }

    private static Object construct(Class<?> c) {
        Constructor<?> ctor;
        try {
            ctor = c.getConstructor();
        } catch (NoSuchMethodException e) {
            if (c.getEnclosingClass() != null && !Modifier.isStatic(c.getModifiers())) {
                throw new Fault("Class " + c.getName()
                        + " cannot be instantiated because it is a non-static inner class",
                        "java.lang.Exception", null, false);
            }
            throw new Fault("Class " + c.getName() + " has no public zero-argument constructor",
                    "java.lang.Exception", null, false);
        }
        try {
            ctor.setAccessible(true);
            return ctor.newInstance();
        } catch (InvocationTargetException e) {
            throw Fault.of(e.getCause() == null ? e : e.getCause(), true);
        } catch (Throwable t) {
            throw Fault.of(t, true);
        }
    }

    // -- package.Class::method ---------------------------------------------------------------

    private static Handler methodHandler(Class<?> c, String name, Serializer serializer) {
        List<Method> candidates = new ArrayList<Method>();
        try {
            for (Method m : c.getMethods()) {
                if (m.getName().equals(name)) {
                    candidates.add(m);
                }
            }
        } catch (NoClassDefFoundError e) {
            throw new Fault("Error loading method " + name + " on class " + c.getName(),
                    e.getClass().getName(), Fault.trace(e), false);
        }
        Collections.sort(candidates, new Comparator<Method>() {
            public int compare(Method a, Method b) {
                if (a.isBridge() != b.isBridge()) {
                    return a.isBridge() ? 1 : -1;
                }
                return Integer.compare(weight(b), weight(a));
            }
        });
        for (Method m : candidates) {
            Handler h = overload(c, m, serializer);
            if (h != null) {
                return h;
            }
        }
        throw Fault.message("No public method named " + name
                + " with appropriate method signature found on class " + c.getName());
    }

    private static int weight(Method m) {
        Class<?>[] p = m.getParameterTypes();
        return p.length + (p.length > 0 && p[p.length - 1] == Context.class ? 1 : 0);
    }

    private static Handler overload(Class<?> c, Method m, Serializer serializer) {
        Class<?>[] p = m.getParameterTypes();
        Type[] g = m.getGenericParameterTypes();
        Type r = m.getGenericReturnType();
        switch (p.length) {
            case 0:
                return methodPojo(c, m, null, r, false, serializer);
            case 1:
                if (p[0] == InputStream.class) {
                    return stream(c, m, new int[] {0, -1, -1});
                }
                if (p[0] == OutputStream.class) {
                    return stream(c, m, new int[] {-1, 0, -1});
                }
                if (p[0] == Context.class) {
                    return methodPojo(c, m, null, r, true, serializer);
                }
                return methodPojo(c, m, g[0], r, false, serializer);
            case 2:
                if (p[0] == OutputStream.class) {
                    return p[1] == Context.class ? stream(c, m, new int[] {-1, 0, 1}) : null;
                }
                if (p[0] == Context.class) {
                    return null;
                }
                if (p[0] == InputStream.class) {
                    if (p[1] == OutputStream.class) {
                        return stream(c, m, new int[] {0, 1, -1});
                    }
                    return p[1] == Context.class ? stream(c, m, new int[] {0, -1, 1}) : null;
                }
                return p[1] == Context.class ? methodPojo(c, m, g[0], r, true, serializer) : null;
            case 3:
                if (p[0] == InputStream.class && p[1] == OutputStream.class && p[2] == Context.class) {
                    return stream(c, m, new int[] {0, 1, 2});
                }
                return null;
            default:
                return null;
        }
    }

    private static Object instanceFor(Class<?> c, Method m) {
        m.setAccessible(true);
        return Modifier.isStatic(m.getModifiers()) ? null : construct(c);
    }

    private static Object invoke(Method m, Object target, Object[] args) throws Throwable {
        try {
            return m.invoke(target, args);
        } catch (InvocationTargetException e) {
            throw e.getCause() == null ? e : e.getCause();
        }
    }

    /** A stream method; {@code slots} says where input, output and context go (-1: not taken). */
    private static Handler stream(Class<?> c, final Method m, final int[] slots) {
        final Object target = instanceFor(c, m);
        final int n = m.getParameterTypes().length;
        return new Handler() {
            public void handle(byte[] input, ByteArrayOutputStream output, Context context)
                    throws Throwable {
                Object[] args = new Object[n];
                if (slots[0] >= 0) {
                    args[slots[0]] = new ByteArrayInputStream(input);
                }
                if (slots[1] >= 0) {
                    args[slots[1]] = output;
                }
                if (slots[2] >= 0) {
                    args[slots[2]] = context;
                }
                invoke(m, target, args);
            }
        };
    }

    private static Handler methodPojo(Class<?> c, final Method m, final Type input, Type result,
            final boolean withContext, Serializer serializer) {
        final Object target = instanceFor(c, m);
        final int n = m.getParameterTypes().length;
        return pojo(new PojoCall() {
            public Object call(Object event, Context context) throws Throwable {
                Object[] args = new Object[n];
                int i = 0;
                if (input != null) {
                    args[i++] = event;
                }
                if (withContext) {
                    args[i] = context;
                }
                return invoke(m, target, args);
            }
        }, input, result, serializer);
    }

    // -- POJO input and output -----------------------------------------------------------

    private static boolean isVoid(Type t) {
        return t == void.class || t == Void.class;
    }

    private static Handler pojo(final PojoCall call, final Type input, final Type result,
            final Serializer serializer) {
        return new Handler() {
            public void handle(byte[] raw, ByteArrayOutputStream output, Context context)
                    throws Throwable {
                Object event = null;
                if (input != null) {
                    try {
                        event = serializer.read(raw, input);
                    } catch (Throwable t) {
                        throw new RuntimeException("An error occurred during JSON parsing", Fault.filter(t));
                    }
                }
                Object value = call.call(event, context);
                if (result == null || isVoid(result)) {
                    output.write(NULL);
                    return;
                }
                try {
                    serializer.write(value, output, result);
                } catch (Throwable t) {
                    throw new RuntimeException("An error occurred during JSON serialization of response", t);
                }
            }
        };
    }

    /** The function's CustomPojoSerializer if it ships one, else Lamina's mapper. */
    private abstract static class Serializer {
        abstract Object read(byte[] raw, Type type) throws Exception;

        abstract void write(Object value, ByteArrayOutputStream out, Type type) throws Exception;

        static Serializer find(ClassLoader loader) {
            Iterator<CustomPojoSerializer> found =
                    ServiceLoader.load(CustomPojoSerializer.class, loader).iterator();
            if (found.hasNext()) {
                final CustomPojoSerializer custom = found.next();
                return new Serializer() {
                    Object read(byte[] raw, Type type) {
                        return custom.fromJson(new ByteArrayInputStream(raw), type);
                    }

                    void write(Object value, ByteArrayOutputStream out, Type type) {
                        custom.toJson(value, out, type);
                    }
                };
            }
            return new Serializer() {
                Object read(byte[] raw, Type type) {
                    return Mapper.read(new String(raw, StandardCharsets.UTF_8), type);
                }

                void write(Object value, ByteArrayOutputStream out, Type type) throws Exception {
                    out.write(Mapper.write(value).getBytes(StandardCharsets.UTF_8));
                }
            };
        }
    }
}
