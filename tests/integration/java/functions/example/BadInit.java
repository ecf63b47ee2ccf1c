package example;

import java.util.Map;

public class BadInit {
    static {
        explode();
    }

    private static void explode() {
        throw new IllegalArgumentException("static init failed");
    }

    public String handleRequest(Map<String, Object> event) {
        return "unreachable";
    }
}
