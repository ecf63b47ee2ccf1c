package example;

import java.util.List;
import java.util.Map;

public class Greeting {
    private final String message;
    private final int nextAge;
    private final List<String> tags;
    private final Map<String, Object> where;
    private final boolean adult;

    public Greeting(String message, int nextAge, List<String> tags, Map<String, Object> where, boolean adult) {
        this.message = message;
        this.nextAge = nextAge;
        this.tags = tags;
        this.where = where;
        this.adult = adult;
    }

    public String getMessage() {
        return message;
    }

    public int getNextAge() {
        return nextAge;
    }

    public List<String> getTags() {
        return tags;
    }

    public Map<String, Object> getWhere() {
        return where;
    }

    public boolean isAdult() {
        return adult;
    }

    public String getNothing() {
        return null;
    }
}
