package example;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

public class Hog {
    private static final List<byte[]> KEPT = new ArrayList<byte[]>();

    public String handleRequest(Map<String, Object> event) {
        if (event.containsKey("beyondHeap")) {
            // One array larger than the whole heap: OutOfMemoryError at once, deterministically
            // (filling the heap instead would race the environment's own memory limit).
            long[] big = new long[(int) Math.min(Integer.MAX_VALUE - 8, Runtime.getRuntime().maxMemory() / 8 + (1 << 20))];
            return "allocated " + big.length;
        }
        int mb = ((Number) event.get("mb")).intValue();
        for (int i = 0; i < mb; i++) {
            KEPT.add(new byte[1 << 20]);
        }
        return "kept " + KEPT.size() + " MB";
    }
}
