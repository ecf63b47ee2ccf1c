package lamina.runtime;

import java.lang.reflect.Type;
import java.math.BigDecimal;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * Checks of the runtime client's JSON reader and POJO mapper, run by
 * tests/unit/test_java_mapper.py (no JUnit here: a main that throws on the first failure).
 */
public final class MapperCheck {
    private static int checks;

    public enum Color { RED, GREEN }

    public static class Bean {
        public String name;
        public int count;
        public transient String skipped = "never written";
        private List<Integer> numbers;
        private Map<String, List<String>> groups;
        private Color color;
        private boolean active;
        private String url;
        private Optional<String> nick = Optional.empty();

        public List<Integer> getNumbers() {
            return numbers;
        }

        public void setNumbers(List<Integer> numbers) {
            this.numbers = numbers;
        }

        public Map<String, List<String>> getGroups() {
            return groups;
        }

        public void setGroups(Map<String, List<String>> groups) {
            this.groups = groups;
        }

        public Color getColor() {
            return color;
        }

        public void setColor(Color color) {
            this.color = color;
        }

        public boolean isActive() {
            return active;
        }

        public void setActive(boolean active) {
            this.active = active;
        }

        public String getURL() {
            return url;
        }

        public void setURL(String url) {
            this.url = url;
        }

        public Optional<String> getNick() {
            return nick;
        }
    }

    /** Like Lambda's event classes: a property spelled "Records" in JSON. */
    public static class Event {
        private List<Map<String, Object>> records;

        public List<Map<String, Object>> getRecords() {
            return records;
        }

        public void setRecords(List<Map<String, Object>> records) {
            this.records = records;
        }
    }

    public static List<Set<Long>> genericField;

    private MapperCheck() {}

    private static void eq(Object expected, Object actual) {
        checks++;
        boolean same = expected == null ? actual == null
                : expected.getClass().isArray() ? Arrays.deepEquals(new Object[] {expected}, new Object[] {actual})
                : expected.equals(actual);
        if (!same) {
            throw new AssertionError("expected <" + expected + "> but got <" + actual + ">");
        }
    }

    private static void fails(String json, Type type, String fragment) {
        checks++;
        try {
            Mapper.read(json, type);
        } catch (IllegalArgumentException e) {
            if (!e.getMessage().contains(fragment)) {
                throw new AssertionError("message <" + e.getMessage() + "> lacks <" + fragment + ">");
            }
            return;
        }
        throw new AssertionError("no error reading " + json + " as " + type);
    }

    public static void main(String[] args) throws Exception {
        // The reader: natural types, escapes, numbers by size, leniency.
        Map<String, Object> tree = new LinkedHashMap<String, Object>();
        tree.put("s", "a\"b\\c\n\u00e9\u20ac");
        tree.put("i", 7);
        tree.put("l", 12345678901L);
        tree.put("big", new java.math.BigInteger("123456789012345678901234567890"));
        tree.put("d", 1.5e-3);
        tree.put("t", true);
        tree.put("n", null);
        tree.put("a", Arrays.<Object>asList(1, "x", Collections.emptyMap()));
        eq(tree, Json.parse(" {\"s\":\"a\\\"b\\\\c\\n\\u00e9\u20ac\",\"i\":7,\"l\":12345678901,"
                + "\"big\":123456789012345678901234567890,\"d\":1.5e-3,\"t\":true,\"n\":null,"
                + "\"a\":[1,\"x\",{}]} "));
        eq(tree, Json.parse(Mapper.write(tree)));
        eq(Collections.singletonMap("k", "v"), Json.parse("{'k': 'v'}"));
        eq(Collections.singletonMap("k", 1), Json.parse("{k: 1}"));
        eq("\"line\\nbreak\\u0001\"", Mapper.write("line\nbreak\u0001"));
        eq("\"NaN\"", Mapper.write(Double.NaN));
        checks++;
        try {
            Json.parse("{\"a\":1} trailing");
            throw new AssertionError("trailing content accepted");
        } catch (IllegalArgumentException expected) {
            // refused
        }

        // Beans: setters, public fields, generics, enums, bean naming, nulls left out.
        Bean b = (Bean) Mapper.read("{\"name\":\"n\",\"count\":\"3\",\"numbers\":[1,2],"
                + "\"groups\":{\"g\":[\"x\",\"y\"]},\"color\":\"GREEN\",\"active\":true,"
                + "\"URL\":\"http://h\",\"unknown\":{\"deep\":[1]},\"skipped\":\"in\"}", Bean.class);
        eq("n", b.name);
        eq(3, b.count);
        eq(Arrays.asList(1, 2), b.getNumbers());
        eq(Collections.singletonMap("g", Arrays.asList("x", "y")), b.getGroups());
        eq(Color.GREEN, b.getColor());
        eq(true, b.isActive());
        eq("http://h", b.getURL());
        Map<?, ?> written = (Map<?, ?>) Json.parse(Mapper.write(b));
        eq("n", written.get("name"));
        eq("GREEN", written.get("color"));
        eq("http://h", written.get("URL"));
        eq(true, written.get("active"));
        eq(false, written.containsKey("skipped"));
        // An empty Optional is written as null (Lambda's NON_NULL inclusion keeps it).
        eq(true, written.containsKey("nick"));
        eq(null, written.get("nick"));
        Bean empty = (Bean) Mapper.read("{\"color\":\"PURPLE\",\"count\":null}", Bean.class);
        eq(null, empty.getColor()); // unknown enum values read as null
        eq(0, empty.count);
        eq(Collections.emptyMap(), Json.parse(Mapper.write(new Object())));

        // Single values and arrays, either way round; empty string as a missing object.
        eq(Arrays.asList(5), Mapper.read("5", List.class));
        eq(7, Mapper.read("[7]", Integer.class));
        eq(null, Mapper.read("\"\"", Bean.class));
        Type setOfLongs = MapperCheck.class.getField("genericField").getGenericType();
        @SuppressWarnings("unchecked")
        List<Set<Long>> nested = (List<Set<Long>>) Mapper.read("[[1,2,2],[3]]", setOfLongs);
        eq(2, nested.get(0).size());
        eq(Long.class, nested.get(0).iterator().next().getClass());
        eq(new BigDecimal("0.1"), Mapper.read("0.1", BigDecimal.class));
        eq("12", Mapper.read("12", String.class));
        eq('x', Mapper.read("\"x\"", char.class));
        eq(false, Mapper.read("null", boolean.class));
        int[] ints = (int[]) Mapper.read("[1,2,3]", int[].class);
        eq(3, ints.length);
        eq("aGk=", Json.parse(Mapper.write("hi".getBytes("UTF-8"))));
        eq(java.time.Instant.parse("2024-01-02T03:04:05Z"),
                Mapper.read("\"2024-01-02T03:04:05Z\"", java.time.Instant.class));

        // Lambda's event classes: "Records" fills getRecords/setRecords.
        Event e = (Event) Mapper.read("{\"Records\":[{\"eventSource\":\"aws:sqs\"}]}", Event.class);
        eq("aws:sqs", e.getRecords().get(0).get("eventSource"));

        // Mismatches are errors (the runtime reports them as JSON parsing errors).
        fails("{\"a\":1}", String.class, "Cannot deserialize value of type `java.lang.String`");
        fails("\"abc\"", Integer.class, "java.lang.Integer");
        fails("[1,2]", Bean.class, "from Array value");
        checks++;
        try {
            Map<String, Object> cycle = new LinkedHashMap<String, Object>();
            cycle.put("self", cycle);
            Mapper.write(cycle);
            throw new AssertionError("a cycle was written");
        } catch (IllegalArgumentException expected) {
            // refused
        }
        System.out.println("ok " + checks);
    }
}
