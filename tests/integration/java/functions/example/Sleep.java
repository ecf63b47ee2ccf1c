package example;

import java.util.Map;

public class Sleep {
    public String handleRequest(Map<String, Object> event) throws InterruptedException {
        System.out.println("sleeping " + event.get("ms"));
        Thread.sleep(((Number) event.get("ms")).longValue());
        return "woke";
    }
}
