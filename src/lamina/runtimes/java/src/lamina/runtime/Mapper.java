package lamina.runtime;

import java.lang.reflect.Array;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.lang.reflect.WildcardType;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Date;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.SortedMap;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;

/**
 * JSON to and from a handler's declared types, the way Lambda's POJO serializer maps them:
 * bean properties are public fields, getters (getX, isX) and setters (setX) with standard bean
 * naming; null properties are left out of the output; unknown input properties are ignored;
 * a single value is accepted where an array is expected and the reverse. Where Lambda's
 * event classes spell a property in another case ("Records" for getRecords), a
 * case-insensitive match is tried when the exact name is not a property.
 */
final class Mapper {
    private static final Map<Class<?>, Bean> BEANS = new ConcurrentHashMap<Class<?>, Bean>();

    private Mapper() {}

    // -- writing -----------------------------------------------------------------------------

    /** The JSON text of any value. */
    static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(value, out, new IdentityHashMap<Object, Boolean>());
        return out.toString();
    }

    private static void write(Object v, StringBuilder out, IdentityHashMap<Object, Boolean> path) {
        if (v == null) {
            out.append("null");
        } else if (v instanceof String) {
            Json.quote((String) v, out);
        } else if (v instanceof Boolean) {
            out.append(v.toString());
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                Json.quote(v.toString(), out);
            } else {
                out.append(v.toString());
            }
        } else if (v instanceof Number) {
            out.append(v.toString());
        } else if (v instanceof Character || v instanceof Enum) {
            Json.quote(v instanceof Enum ? ((Enum<?>) v).name() : v.toString(), out);
        } else if (v instanceof Optional) {
            write(((Optional<?>) v).orElse(null), out, path);
        } else if (v instanceof Date) {
            out.append(((Date) v).getTime());
        } else if (v instanceof byte[]) {
            Json.quote(Base64.getEncoder().encodeToString((byte[]) v), out);
        } else if (v.getClass().getName().startsWith("java.time.")) {
            Json.quote(v.toString(), out);
        } else {
            if (path.put(v, Boolean.TRUE) != null) {
                throw new IllegalArgumentException("Direct self-reference leading to cycle");
            }
            try {
                writeContainer(v, out, path);
            } finally {
                path.remove(v);
            }
        }
    }

    private static void writeContainer(
            Object v, StringBuilder out, IdentityHashMap<Object, Boolean> path) {
        if (v instanceof Map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                Json.quote(String.valueOf(e.getKey()), out);
                out.append(':');
                write(e.getValue(), out, path);
            }
            out.append('}');
        } else if (v instanceof Iterable) {
            out.append('[');
            boolean first = true;
            for (Object item : (Iterable<?>) v) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                write(item, out, path);
            }
            out.append(']');
        } else if (v.getClass().isArray()) {
            out.append('[');
            int n = Array.getLength(v);
            for (int i = 0; i < n; i++) {
                if (i > 0) {
                    out.append(',');
                }
                write(Array.get(v, i), out, path);
            }
            out.append(']');
        } else {
            out.append('{');
            boolean first = true;
            for (Map.Entry<String, Getter> p : bean(v.getClass()).getters.entrySet()) {
                Object value = p.getValue().get(v);
                if (value == null) {
                    continue; // Lambda's serializer leaves null properties out
                }
                if (!first) {
                    out.append(',');
                }
                first = false;
                Json.quote(p.getKey(), out);
                out.append(':');
                write(value, out, path);
            }
            out.append('}');
        }
    }

    // -- reading -----------------------------------------------------------------------------

    /** The JSON text {@code json} as a value of {@code type}. */
    static Object read(String json, Type type) {
        return convert(Json.parse(json), type);
    }

    /** A parsed JSON tree as a value of {@code type}. */
    static Object convert(Object tree, Type type) {
        if (type instanceof Class) {
            return toClass(tree, (Class<?>) type, null);
        }
        if (type instanceof ParameterizedType) {
            ParameterizedType p = (ParameterizedType) type;
            return toClass(tree, (Class<?>) p.getRawType(), p.getActualTypeArguments());
        }
        if (type instanceof GenericArrayType) {
            return toArray(tree, ((GenericArrayType) type).getGenericComponentType());
        }
        if (type instanceof WildcardType) {
            return convert(tree, ((WildcardType) type).getUpperBounds()[0]);
        }
        if (type instanceof TypeVariable) {
            Type[] bounds = ((TypeVariable<?>) type).getBounds();
            return convert(tree, bounds.length > 0 ? bounds[0] : Object.class);
        }
        return tree;
    }

    private static Type arg(Type[] args, int i) {
        return args != null && args.length > i ? args[i] : Object.class;
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Object toClass(Object tree, Class<?> c, Type[] args) {
        if (c == Object.class) {
            return tree;
        }
        if (c.isPrimitive()) {
            return tree == null || "".equals(tree) ? primitiveDefault(c) : scalar(unwrap(tree), c);
        }
        if (Optional.class == c) {
            return Optional.ofNullable(convert(tree, arg(args, 0)));
        }
        if (c.isArray()) {
            return tree == null ? null : toArray(tree, c.getComponentType());
        }
        if (Collection.class.isAssignableFrom(c) || c == Iterable.class) {
            if (tree == null) {
                return null;
            }
            List<?> items = tree instanceof List ? (List<?>) tree : java.util.Collections.singletonList(tree);
            Collection<Object> out = newCollection(c);
            for (Object item : items) {
                out.add(convert(item, arg(args, 0)));
            }
            return out;
        }
        if (Map.class.isAssignableFrom(c)) {
            if (tree == null || "".equals(tree)) {
                return null;
            }
            if (!(tree instanceof Map)) {
                throw mismatch(c, tree);
            }
            Map<Object, Object> out = newMap(c);
            for (Map.Entry<String, Object> e : ((Map<String, Object>) tree).entrySet()) {
                out.put(convert(e.getKey(), arg(args, 0)), convert(e.getValue(), arg(args, 1)));
            }
            return out;
        }
        tree = unwrap(tree);
        if (tree == null) {
            return null;
        }
        if (c == String.class || c == CharSequence.class) {
            if (tree instanceof Map || tree instanceof List) {
                throw mismatch(c, tree);
            }
            return tree.toString();
        }
        if (isScalar(c)) {
            if ("".equals(tree) && c != Character.class) {
                return null;
            }
            return scalar(tree, c);
        }
        if (c.isEnum()) {
            for (Object constant : c.getEnumConstants()) {
                if (((Enum) constant).name().equals(tree.toString())) {
                    return constant;
                }
            }
            return null; // Lambda reads unknown enum values as null
        }
        if (c == Date.class) {
            return tree instanceof Number
                    ? new Date(((Number) tree).longValue())
                    : Date.from(java.time.Instant.parse(tree.toString()));
        }
        if (c.getName().startsWith("java.time.")) {
            return parseTime(tree, c);
        }
        if ("".equals(tree)) {
            return null; // an empty string stands for a missing object
        }
        if (!(tree instanceof Map)) {
            throw mismatch(c, tree);
        }
        return toBean((Map<String, Object>) tree, c);
    }

    private static Object unwrap(Object tree) {
        // A one-element array where a single value is expected (as Lambda's reader accepts).
        if (tree instanceof List && ((List<?>) tree).size() == 1) {
            return ((List<?>) tree).get(0);
        }
        return tree;
    }

    private static Object toArray(Object tree, Type component) {
        if (tree == null) {
            return null;
        }
        Class<?> raw = rawClass(component);
        if (raw == byte.class && tree instanceof String) {
            return Base64.getDecoder().decode((String) tree);
        }
        List<?> items = tree instanceof List ? (List<?>) tree : java.util.Collections.singletonList(tree);
        Object out = Array.newInstance(raw, items.size());
        for (int i = 0; i < items.size(); i++) {
            Array.set(out, i, convert(items.get(i), component));
        }
        return out;
    }

    private static Class<?> rawClass(Type t) {
        if (t instanceof Class) {
            return (Class<?>) t;
        }
        if (t instanceof ParameterizedType) {
            return (Class<?>) ((ParameterizedType) t).getRawType();
        }
        if (t instanceof GenericArrayType) {
            return Array.newInstance(rawClass(((GenericArrayType) t).getGenericComponentType()), 0)
                    .getClass();
        }
        return Object.class;
    }

    private static Collection<Object> newCollection(Class<?> c) {
        if (!c.isInterface() && !Modifier.isAbstract(c.getModifiers())) {
            try {
                @SuppressWarnings("unchecked")
                Collection<Object> made = (Collection<Object>) c.getDeclaredConstructor().newInstance();
                return made;
            } catch (ReflectiveOperationException e) {
                // fall through to a standard collection of the right kind
            }
        }
        if (SortedSet.class.isAssignableFrom(c)) {
            return new TreeSet<Object>();
        }
        if (Set.class.isAssignableFrom(c)) {
            return new LinkedHashSet<Object>();
        }
        return new ArrayList<Object>();
    }

    private static Map<Object, Object> newMap(Class<?> c) {
        if (!c.isInterface() && !Modifier.isAbstract(c.getModifiers())) {
            try {
                @SuppressWarnings("unchecked")
                Map<Object, Object> made = (Map<Object, Object>) c.getDeclaredConstructor().newInstance();
                return made;
            } catch (ReflectiveOperationException e) {
                // fall through
            }
        }
        return SortedMap.class.isAssignableFrom(c)
                ? new TreeMap<Object, Object>()
                : new LinkedHashMap<Object, Object>();
    }

    private static boolean isScalar(Class<?> c) {
        return Number.class.isAssignableFrom(c) || c == Boolean.class || c == Character.class;
    }

    private static Object primitiveDefault(Class<?> c) {
        if (c == boolean.class) {
            return Boolean.FALSE;
        }
        if (c == char.class) {
            return '\0';
        }
        return scalar(0, c);
    }

    private static Object scalar(Object tree, Class<?> c) {
        if (tree instanceof Map || tree instanceof List) {
            throw mismatch(c, tree);
        }
        String s = tree.toString();
        try {
            if (c == boolean.class || c == Boolean.class) {
                if (tree instanceof Boolean) {
                    return tree;
                }
                if (tree instanceof Number) {
                    return ((Number) tree).intValue() != 0;
                }
                if (s.equals("true") || s.equals("false")) {
                    return Boolean.valueOf(s);
                }
                throw mismatch(c, tree);
            }
            if (c == char.class || c == Character.class) {
                if (s.length() != 1) {
                    throw mismatch(c, tree);
                }
                return s.charAt(0);
            }
            if (tree instanceof Boolean) {
                throw mismatch(c, tree);
            }
            Number n = tree instanceof Number ? (Number) tree : new BigDecimal(s.trim());
            if (c == int.class || c == Integer.class) {
                return n.intValue();
            }
            if (c == long.class || c == Long.class) {
                return n.longValue();
            }
            if (c == double.class || c == Double.class) {
                return n.doubleValue();
            }
            if (c == float.class || c == Float.class) {
                return n.floatValue();
            }
            if (c == short.class || c == Short.class) {
                return n.shortValue();
            }
            if (c == byte.class || c == Byte.class) {
                return n.byteValue();
            }
            if (c == BigDecimal.class) {
                return n instanceof BigDecimal ? n : new BigDecimal(n.toString());
            }
            if (c == BigInteger.class) {
                return new BigDecimal(n.toString()).toBigInteger();
            }
            return n; // Number itself
        } catch (NumberFormatException e) {
            throw mismatch(c, tree);
        }
    }

    private static Object parseTime(Object tree, Class<?> c) {
        try {
            if (c == java.time.Instant.class && tree instanceof Number) {
                BigDecimal seconds = new BigDecimal(tree.toString());
                return java.time.Instant.ofEpochSecond(
                        seconds.longValue(),
                        seconds.remainder(BigDecimal.ONE).movePointRight(9).longValue());
            }
            Method parse = c.getMethod("parse", CharSequence.class);
            return parse.invoke(null, tree.toString());
        } catch (ReflectiveOperationException e) {
            throw mismatch(c, tree);
        }
    }

    private static IllegalArgumentException mismatch(Class<?> c, Object tree) {
        String what = tree instanceof Map ? "Object value" : tree instanceof List ? "Array value"
                : tree instanceof String ? "String value" : "value " + tree;
        return new IllegalArgumentException(
                "Cannot deserialize value of type `" + c.getName() + "` from " + what);
    }

    // -- beans -------------------------------------------------------------------------------

    private static Object toBean(Map<String, Object> tree, Class<?> c) {
        Bean bean = bean(c);
        if (bean.record != null) {
            return bean.newRecord(tree);
        }
        if (bean.constructor == null) {
            throw new IllegalArgumentException("Cannot construct instance of `" + c.getName()
                    + "` (no Creators, like default constructor, exist)");
        }
        Object out;
        try {
            out = bean.constructor.newInstance();
        } catch (ReflectiveOperationException e) {
            throw new IllegalArgumentException("Cannot construct instance of `" + c.getName() + "`",
                    e.getCause() != null ? e.getCause() : e);
        }
        for (Map.Entry<String, Object> e : tree.entrySet()) {
            Setter setter = bean.setters.get(e.getKey());
            if (setter == null) {
                setter = bean.settersByLowerName.get(e.getKey().toLowerCase(Locale.ROOT));
            }
            if (setter != null) {
                setter.set(out, convert(e.getValue(), setter.type));
            }
        }
        return out;
    }

    private static Bean bean(Class<?> c) {
        Bean b = BEANS.get(c);
        if (b == null) {
            b = new Bean(c);
            BEANS.put(c, b);
        }
        return b;
    }

    private interface Getter {
        Object get(Object target);
    }

    private static final class Setter {
        final Type type;
        final Field field;
        final Method method;

        Setter(Type type, Field field, Method method) {
            this.type = type;
            this.field = field;
            this.method = method;
        }

        void set(Object target, Object value) {
            try {
                if (method != null) {
                    method.invoke(target, value);
                } else {
                    field.set(target, value);
                }
            } catch (java.lang.reflect.InvocationTargetException e) {
                throw new IllegalArgumentException(e.getCause().toString(), e.getCause());
            } catch (IllegalAccessException e) {
                throw new IllegalArgumentException(e.toString(), e);
            }
        }
    }

    /** The properties of one class, found once. */
    private static final class Bean {
        final Map<String, Getter> getters = new LinkedHashMap<String, Getter>();
        final Map<String, Setter> setters = new LinkedHashMap<String, Setter>();
        final Map<String, Setter> settersByLowerName = new LinkedHashMap<String, Setter>();
        Constructor<?> constructor;
        Constructor<?> record;
        String[] recordNames;
        Type[] recordTypes;

        Bean(Class<?> c) {
            findRecord(c);
            for (final Field f : c.getFields()) {
                int m = f.getModifiers();
                if (Modifier.isStatic(m) || Modifier.isTransient(m)) {
                    continue;
                }
                getters.put(f.getName(), new Getter() {
                    public Object get(Object target) {
                        try {
                            return f.get(target);
                        } catch (IllegalAccessException e) {
                            throw new IllegalArgumentException(e.toString(), e);
                        }
                    }
                });
                if (!Modifier.isFinal(m)) {
                    setters.put(f.getName(), new Setter(f.getGenericType(), f, null));
                }
            }
            for (final Method m : c.getMethods()) {
                if (Modifier.isStatic(m.getModifiers()) || m.getDeclaringClass() == Object.class
                        || m.isBridge()) {
                    continue;
                }
                String name = m.getName();
                int params = m.getParameterTypes().length;
                if (params == 0 && m.getReturnType() != void.class) {
                    String prop = name.startsWith("get") && name.length() > 3 ? beanName(name.substring(3))
                            : name.startsWith("is") && name.length() > 2
                                    && (m.getReturnType() == boolean.class
                                            || m.getReturnType() == Boolean.class)
                                    ? beanName(name.substring(2)) : null;
                    if (prop == null && record != null && isRecordComponent(name)) {
                        prop = name;
                    }
                    if (prop != null) {
                        m.setAccessible(true);
                        getters.put(prop, new Getter() {
                            public Object get(Object target) {
                                try {
                                    return m.invoke(target);
                                } catch (java.lang.reflect.InvocationTargetException e) {
                                    throw new IllegalArgumentException(
                                            e.getCause().toString(), e.getCause());
                                } catch (IllegalAccessException e) {
                                    throw new IllegalArgumentException(e.toString(), e);
                                }
                            }
                        });
                    }
                } else if (params == 1 && name.startsWith("set") && name.length() > 3) {
                    m.setAccessible(true);
                    setters.put(beanName(name.substring(3)),
                            new Setter(m.getGenericParameterTypes()[0], null, m));
                }
            }
            for (Map.Entry<String, Setter> e : setters.entrySet()) {
                settersByLowerName.put(e.getKey().toLowerCase(Locale.ROOT), e.getValue());
            }
            try {
                constructor = c.getDeclaredConstructor();
                constructor.setAccessible(true);
            } catch (NoSuchMethodException | RuntimeException e) {
                constructor = null;
            }
        }

        private boolean isRecordComponent(String name) {
            for (String n : recordNames) {
                if (n.equals(name)) {
                    return true;
                }
            }
            return false;
        }

        // Records (Java 16+) through reflection: this runtime also compiles for Java 8.
        private void findRecord(Class<?> c) {
            try {
                Object[] components = (Object[]) Class.class.getMethod("getRecordComponents").invoke(c);
                if (components == null) {
                    return;
                }
                recordNames = new String[components.length];
                recordTypes = new Type[components.length];
                Class<?>[] raw = new Class<?>[components.length];
                for (int i = 0; i < components.length; i++) {
                    Class<?> rc = components[i].getClass();
                    recordNames[i] = (String) rc.getMethod("getName").invoke(components[i]);
                    recordTypes[i] = (Type) rc.getMethod("getGenericType").invoke(components[i]);
                    raw[i] = (Class<?>) rc.getMethod("getType").invoke(components[i]);
                }
                record = c.getDeclaredConstructor(raw);
                record.setAccessible(true);
            } catch (ReflectiveOperationException | RuntimeException e) {
                record = null;
            }
        }

        Object newRecord(Map<String, Object> tree) {
            Object[] values = new Object[recordNames.length];
            for (int i = 0; i < values.length; i++) {
                values[i] = convert(tree.get(recordNames[i]), recordTypes[i]);
            }
            try {
                return record.newInstance(values);
            } catch (ReflectiveOperationException e) {
                throw new IllegalArgumentException("Cannot construct instance of `"
                        + record.getDeclaringClass().getName() + "`",
                        e.getCause() != null ? e.getCause() : e);
            }
        }
    }

    /** Standard bean naming: "Name" is "name", but "URL" stays "URL". */
    private static String beanName(String s) {
        if (s.length() > 1 && Character.isUpperCase(s.charAt(0)) && Character.isUpperCase(s.charAt(1))) {
            return s;
        }
        return Character.toLowerCase(s.charAt(0)) + s.substring(1);
    }
}
