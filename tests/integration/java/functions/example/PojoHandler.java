package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public class PojoHandler implements RequestHandler<Person, Greeting> {
    @Override
    public Greeting handleRequest(Person person, Context context) {
        List<String> tags = new ArrayList<String>();
        if (person.getTags() != null) {
            for (String t : person.getTags()) {
                tags.add(t.toUpperCase());
            }
        }
        Map<String, Object> where = new LinkedHashMap<String, Object>();
        if (person.getAddress() != null) {
            where.put("city", person.getAddress().city);
            where.put("zip", person.getAddress().zip);
        }
        return new Greeting("Hello, " + person.getName() + "!", person.getAge() + 1, tags, where,
                person.getAge() >= 18);
    }
}
