package example;

import java.util.Map;

// No Lambda interface at all: a method handler on a plain class.
public class Plain {
    public String hello(Map<String, String> event) {
        return "hello " + event.get("who");
    }
}
