package example;

import java.util.Map;

public class BadConstructor {
    public BadConstructor() {
        throw new UnsupportedOperationException("constructor refused");
    }

    public String handleRequest(Map<String, Object> event) {
        return "unreachable";
    }
}
