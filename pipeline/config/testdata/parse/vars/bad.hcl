flag = "perhaps"
