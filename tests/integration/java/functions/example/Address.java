package example;

public class Address {
    public String city;
    public int zip;
}
