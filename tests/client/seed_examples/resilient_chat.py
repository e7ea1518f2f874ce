import asyncio
from chatd_client import LLMClient, Conversation


async def resilient_chat():
    # Multiple models for redundancy
    client = LLMClient(
        ["claude-4-sonnet", "gpt-4.1"],
        model_weights=[0.7, 0.3],
        max_new_tokens=1024,
    )

    conv = Conversation().system("You are a helpful assistant.")

    print("Chat started! Type 'quit' to exit.\n")

    while True:
        user_input = input("You: ").strip()

        if user_input.lower() == "quit":
            break

        if not user_input:
            continue

        conv = conv.user(user_input)

        # prefer_model="last" maintains the same model across turns
        # Falls back to other models if the preferred one fails
        response = await client.start(conv, prefer_model="last")

        if response and response.completion:
            print(f"Assistant ({response.model_internal}): {response.completion}\n")
            # with_response() adds the message AND records model_used
            conv = conv.with_response(response)
        else:
            print(f"Error: {response.error_message}\n")
            conv.messages.pop()


if __name__ == "__main__":
    asyncio.run(resilient_chat())
