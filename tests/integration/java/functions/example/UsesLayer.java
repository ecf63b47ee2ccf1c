package example;

public class UsesLayer {
    public String handleRequest(String s) {
        return layered.Shout.loud(s);
    }
}
