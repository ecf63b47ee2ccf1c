package example;

import com.amazonaws.services.lambda.runtime.Context;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeSet;

public class MapHandler {
    public Map<String, Object> handle(Map<String, Object> event, Context context) {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("keys", new ArrayList<String>(new TreeSet<String>(event.keySet())));
        Map<String, String> types = new LinkedHashMap<String, String>();
        for (Map.Entry<String, Object> e : event.entrySet()) {
            types.put(e.getKey(), e.getValue() == null ? "null" : e.getValue().getClass().getName());
        }
        out.put("types", types);
        out.put("echo", event);
        out.put("requestId", context.getAwsRequestId());
        return out;
    }
}
