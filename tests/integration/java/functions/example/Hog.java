package example;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

public class Hog {
    private static final List<byte[]> KEPT = new ArrayList<byte[]>();

    public String handleRequest(Map<String, Object> event) {
        int mb = ((Number) event.get("mb")).intValue();
        for (int i = 0; i < mb; i++) {
            KEPT.add(new byte[1 << 20]);
        }
        return "kept " + KEPT.size() + " MB";
    }
}
